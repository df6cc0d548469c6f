"""fiboa GeoParquet: core columns, Parquet types and collection metadata, checked against the published schemas.

The schemas (fiboa 0.3.0, Vecorel 0.1.0) are vendored in tests/data/fiboa/. When ``GEOSEG_FIBOA_PYTHON`` names the
python of a venv with ``fiboa-cli``, the real validator runs too (offline, via tests/data/fiboa/validate_offline.py).
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import geopandas as gpd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
import yaml

from geoseg.errors import OutputExistsError
from geoseg.export.fiboa import FIBOA_SCHEMA, SCHEMAS, VECOREL_SCHEMA, write_fiboa
from geoseg.plan.outputs import fiboa_path

DATA = Path(__file__).parents[1] / "data" / "fiboa"
FIBOA = yaml.safe_load((DATA / "fiboa-v0.3.0.yaml").read_text())
VECOREL = yaml.safe_load((DATA / "vecorel-v0.1.0.yaml").read_text())
ARROW_TYPES = {  # Vecorel SDL type -> accepted Arrow types (geoparquet/datatypes.md)
    "string": lambda t: pa.types.is_string(t),
    "float": lambda t: t == pa.float32(),
    "date-time": lambda t: pa.types.is_timestamp(t) and t.tz is not None,
    "geometry": lambda t: pa.types.is_binary(t),
    "bounding-box": lambda t: pa.types.is_struct(t) and [f.name for f in t] == ["xmin", "ymin", "xmax", "ymax"],
}


def _layer() -> gpd.GeoDataFrame:
    """A field layer as geoseg writes it (ids, areas, statistics, verdict)."""
    boxes = [shapely.box(500000, 5000000, 500100, 5000100), shapely.box(500200, 5000000, 500260, 5000050)]
    return gpd.GeoDataFrame(
        {
            "id": [1, 2],
            "score": [1.0, 1.0],
            "area_m2": [10000.0, 3000.0],
            "perimeter_m": [400.0, 220.0],
            "ndvi_median": [0.71, 0.32],
            "verdict": ["healthy", "not_observed"],
        },
        geometry=boxes,
        crs="EPSG:32633",
    )


def _check_against_schemas(path: Path) -> None:
    """The published schemas' rules that a Parquet file can break: required columns, types, enums, ranges."""
    table = pq.read_table(path)
    collection = json.loads(table.schema.metadata[b"collection"])
    (schemas,) = collection["schemas"].values()
    assert set(schemas) >= {VECOREL_SCHEMA, FIBOA_SCHEMA}
    for name in VECOREL["required"]:
        if VECOREL["collection"].get(name):
            assert name in collection, name  # a collection-level property
        else:
            assert name in table.column_names and not table.schema.field(name).nullable, name
    rows = table.drop_columns(["geometry"]).to_pylist()
    for name, rule in {**VECOREL["properties"], **FIBOA["properties"]}.items():
        if name not in table.column_names:
            continue
        assert ARROW_TYPES[rule["type"]](table.schema.field(name).type), (name, table.schema.field(name).type)
        for row in rows if name != "geometry" else []:
            value = row[name]
            if "enum" in rule:
                assert value in rule["enum"], (name, value)
            if "exclusiveMinimum" in rule:
                assert value > rule["exclusiveMinimum"], (name, value)
            if "maximum" in rule:
                assert value <= rule["maximum"], (name, value)
            if "minLength" in rule:
                assert len(value) >= rule["minLength"], (name, value)


def test_fiboa_file_has_the_core_columns_and_passes_the_schemas(tmp_path):
    path = write_fiboa(_layer(), tmp_path / "f.fiboa.parquet", "job-a", datetime(2024, 6, 1, 10, 30), False)
    back = gpd.read_parquet(path)
    assert list(back.columns[:6]) == [
        "id",
        "collection",
        "metrics:area",
        "metrics:perimeter",
        "determination:method",
        "determination:datetime",
    ]
    assert list(back["id"]) == ["1", "2"] and set(back["collection"]) == {"job-a"}
    assert list(back["metrics:area"]) == [10000.0, 3000.0] and set(back["determination:method"]) == {"auto-imagery"}
    assert back["determination:datetime"].iloc[0] == datetime(2024, 6, 1, 10, 30, tzinfo=timezone.utc)
    assert list(back["geoseg:verdict"]) == ["healthy", "not_observed"] and "geoseg:ndvi_median" in back
    assert back.crs.to_epsg() == 32633 and back.geometry.geom_equals(_layer().geometry).all()
    _check_against_schemas(path)


def test_fiboa_without_a_known_time_and_no_clobbering(tmp_path):
    path = write_fiboa(_layer(), tmp_path / "f.fiboa.parquet", "job-b", None, False)
    assert "determination:datetime" not in pq.read_schema(path).names
    _check_against_schemas(path)
    with pytest.raises(OutputExistsError):
        write_fiboa(_layer(), path, "job-b", None, False)
    assert fiboa_path(Path("/x/out.gpkg"), "fields") == Path("/x/out_fields.fiboa.parquet")
    empty = write_fiboa(_layer().iloc[:0], tmp_path / "empty.fiboa.parquet", "job-b", None, False)
    assert len(gpd.read_parquet(empty)) == 0
    _check_against_schemas(empty)
    assert SCHEMAS[0] == VECOREL_SCHEMA


def test_schema_check_catches_a_broken_file(tmp_path):
    path = write_fiboa(_layer(), tmp_path / "f.fiboa.parquet", "job-c", None, False)
    table = pq.read_table(path)
    broken = table.set_column(table.column_names.index("determination:method"), "determination:method",
                              pa.array(["by-hand", "by-hand"]))  # fmt: skip
    pq.write_table(broken, tmp_path / "broken.parquet")
    with pytest.raises(AssertionError, match="by-hand"):
        _check_against_schemas(tmp_path / "broken.parquet")


@pytest.mark.skipif(not os.environ.get("GEOSEG_FIBOA_PYTHON"), reason="GEOSEG_FIBOA_PYTHON (a fiboa-cli venv) unset")
def test_fiboa_cli_validates(tmp_path):
    path = write_fiboa(_layer(), tmp_path / "f.fiboa.parquet", "job-d", datetime(2024, 6, 1), False)
    run = subprocess.run(
        [os.environ["GEOSEG_FIBOA_PYTHON"], str(DATA / "validate_offline.py"), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0 and "VALID" in run.stdout, run.stdout + run.stderr
