"""Tests of the export layer: atomic writes, GeoPackage, GeoParquet / FlatGeobuf, QGIS styles, COGs."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS as RioCRS
from rasterio.windows import Window
from shapely.geometry import MultiPolygon, box

from geoseg.errors import OutputExistsError
from geoseg.export.cog import CogWriter, overview_factors
from geoseg.export.styles import categorized_qml, graduated_qml, outline_qml
from geoseg.export.vector import LayerAppender, reproject_layers, write_geopackage, write_vector_formats
from geoseg.inputs.grid import SceneGrid
from geoseg.plan.outputs import vector_format_path
from geoseg.testutils.gis import QGIS_PROCESS, qgis_check_validity, qgis_env

CRS = "EPSG:32633"
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)
CLASS_COLOURS = {1: (0, 160, 0, 255), 2: (230, 200, 0, 255), 3: (220, 40, 40, 255)}


# --------------------------------------------------------------------------------------------- fixtures
def _fields() -> gpd.GeoDataFrame:
    """Three fields, one a MultiPolygon (so the layer is mixed and must be promoted)."""
    x, y = 500000.0, 4990000.0
    geoms = [
        box(x, y, x + 100, y + 100),
        box(x + 200, y, x + 300, y + 150),
        MultiPolygon([box(x + 400, y, x + 450, y + 50), box(x + 500, y, x + 550, y + 50)]),
    ]
    return gpd.GeoDataFrame({"field_id": [1, 2, 3], "area_m2": [1e4, 1.5e4, 5e3]}, geometry=geoms, crs=CRS)


def _health() -> gpd.GeoDataFrame:
    x, y = 500000.0, 4990000.0
    geoms = [box(x, y, x + 50, y + 100), box(x + 50, y, x + 100, y + 100)]
    return gpd.GeoDataFrame({"class": [1, 3], "ndvi": [0.8, 0.2]}, geometry=geoms, crs=CRS)


def _empty() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"tile": pd.Series([], dtype="int64")}, geometry=gpd.GeoSeries([], crs=CRS), crs=CRS)


def _styles() -> dict[str, str]:
    return {
        "fields": outline_qml((255, 255, 0, 255)),
        "crop_health": categorized_qml("class", [(k, f"class {k}", c) for k, c in CLASS_COLOURS.items()]),
        "tiles": graduated_qml("tile", [(0, 10, "first", (0, 0, 255, 120)), (10, 99, "rest", (255, 0, 0, 120))]),
    }


@pytest.fixture
def gpkg(tmp_path: Path) -> Path:
    path = tmp_path / "out.gpkg"
    meta = pd.DataFrame({"key": ["model", "tile_size"], "value": ["classical", "512"]})
    write_geopackage(
        path,
        {"fields": _fields(), "crop_health": _health(), "tiles": _empty()},
        tables={"job": meta},
        styles=_styles(),
    )
    return path


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# --------------------------------------------------------------------------------------------- GeoPackage
def test_geopackage_layers_tables_and_crs(gpkg: Path) -> None:
    layers = {row[0]: row[1] for row in pyogrio.list_layers(gpkg)}
    assert layers == {
        "fields": "MultiPolygon",
        "crop_health": "Polygon",
        "tiles": "MultiPolygon",
        "job": None,
        "layer_styles": None,
    }
    for name, count in (("fields", 3), ("crop_health", 2), ("tiles", 0)):
        info = pyogrio.read_info(gpkg, layer=name)
        assert info["features"] == count
        assert info["crs"] == CRS
    fields = gpd.read_file(gpkg, layer="fields")
    assert fields.geom_type.unique().tolist() == ["MultiPolygon"]
    assert fields["field_id"].tolist() == [1, 2, 3]
    job = pyogrio.read_dataframe(gpkg, layer="job")
    assert job["value"].tolist() == ["classical", "512"]
    with sqlite3.connect(gpkg) as con:
        contents = dict(con.execute("SELECT table_name, data_type FROM gpkg_contents").fetchall())
        rtrees = {
            r[0]
            for r in con.execute("SELECT table_name FROM gpkg_extensions WHERE extension_name = 'gpkg_rtree_index'")
        }
    assert contents["job"] == contents["layer_styles"] == "attributes"
    assert rtrees == {"fields", "crop_health", "tiles"}


def test_geopackage_layer_styles_follow_qgis_schema(gpkg: Path) -> None:
    with sqlite3.connect(gpkg) as con:
        rows = con.execute(
            "SELECT f_table_catalog, f_table_schema, f_table_name, f_geometry_column, styleName, styleQML,"
            " useAsDefault FROM layer_styles ORDER BY f_table_name"
        ).fetchall()
    assert [r[2] for r in rows] == ["crop_health", "fields", "tiles"]
    for catalog, schema, _, geom_column, _, qml, default in rows:
        assert (catalog, schema, geom_column, default) == ("", "", "geom", 1)
        ET.fromstring(qml.split("\n", 1)[1])  # well-formed after the DOCTYPE line


@pytest.mark.skipif(shutil.which("ogrinfo") is None, reason="ogrinfo (gdal-bin) is not installed")
def test_ogrinfo_reads_geopackage_without_warnings(gpkg: Path) -> None:
    proc = subprocess.run(
        ["ogrinfo", "-ro", "-al", "-so", str(gpkg)], capture_output=True, text=True, check=True, timeout=60
    )
    text = proc.stdout + proc.stderr
    assert "warning" not in text.lower() and "error" not in text.lower(), text
    for name, count in (("fields", 3), ("crop_health", 2), ("tiles", 0), ("job", 2), ("layer_styles", 3)):
        assert f"Layer name: {name}\n" in text
        block = text.split(f"Layer name: {name}\n", 1)[1].split("Layer name:", 1)[0]
        assert f"Feature Count: {count}\n" in block
        if name in ("fields", "crop_health", "tiles"):
            assert 'ID["EPSG",32633]' in block
            assert "Geometry: Multi Polygon" in block or name == "crop_health"


def test_geopackage_failure_keeps_existing_output(gpkg: Path) -> None:
    before = gpkg.read_bytes()
    no_crs = _health().set_crs(None, allow_override=True)
    with pytest.raises(ValueError, match="has no CRS"):
        write_geopackage(gpkg, {"fields": _fields(), "crop_health": no_crs}, overwrite=True)
    assert gpkg.read_bytes() == before
    assert _names(gpkg.parent) == {"out.gpkg"}
    with pytest.raises(OutputExistsError):
        write_geopackage(gpkg, {"fields": _fields()})


@pytest.mark.parametrize(
    ("layers", "tables", "styles", "message"),
    [
        ({"fields": "x"}, {"FIELDS": "x"}, {}, "unique"),
        ({"layer_styles": "x"}, {}, {}, "reserved"),
        ({"gpkg_contents": "x"}, {}, {}, "reserved"),
        ({"fields": "x"}, {}, {"tiles": "<qgis/>"}, "not written"),
        ({}, {}, {}, "at least one"),
    ],
)
def test_geopackage_rejects_bad_names(tmp_path: Path, layers, tables, styles, message) -> None:
    with pytest.raises(ValueError, match=message):
        write_geopackage(tmp_path / "x.gpkg", layers, tables=tables, styles=styles)
    assert list(tmp_path.iterdir()) == []


def test_geopackage_pinned_geometry_type(tmp_path: Path) -> None:
    path = tmp_path / "pinned.gpkg"
    write_geopackage(path, {"health": _health()}, geometry_types={"health": "MultiPolygon"})
    assert pyogrio.read_info(path, layer="health")["geometry_type"] == "MultiPolygon"
    with pytest.raises(ValueError, match="declared Polygon"):
        write_geopackage(tmp_path / "bad.gpkg", {"fields": _fields()}, geometry_types={"fields": "Polygon"})


@pytest.mark.parametrize(
    ("guess", "rows", "redo", "final"),
    [
        ("Polygon", [0, 1, 2], "MultiPolygon", "MultiPolygon"),  # a MultiPolygon in a later batch: write again
        ("MultiPolygon", [0, 1], "Polygon", "Polygon"),  # guessed multi, all single: write again as single
        ("MultiPolygon", [2, 0], None, "MultiPolygon"),
        ("Polygon", [], "MultiPolygon", "MultiPolygon"),  # an empty layer is a MultiPolygon layer
    ],
)
def test_layer_appender_ends_with_the_type_of_the_whole_layer(tmp_path: Path, guess, rows, redo, final) -> None:
    """Batch by batch, a layer gets the geometry type write_geopackage gives the whole layer at once."""
    fields = _fields()
    batches = [fields.iloc[[i]] for i in rows] or [fields.iloc[[]]]
    path = tmp_path / "s.gpkg"
    appender = LayerAppender(path, "fields", guess)
    for batch in batches:
        appender.append(batch)
    assert appender.redo == redo
    if redo:
        appender = LayerAppender(path, "fields", redo, replace=True)
        for batch in batches:
            appender.append(batch)
        assert appender.redo is None
    whole = tmp_path / "whole.gpkg"
    write_geopackage(whole, {"fields": fields.iloc[rows]})
    assert pyogrio.read_info(path, layer="fields")["geometry_type"] == final
    assert pyogrio.read_info(whole, layer="fields")["geometry_type"] == final
    back, expected = gpd.read_file(path, layer="fields"), gpd.read_file(whole, layer="fields")
    assert appender.rows == len(rows) == len(back)
    assert back.equals(expected)


# --------------------------------------------------------------------------------------------- other formats
def test_vector_formats_read_back(tmp_path: Path) -> None:
    gpkg = tmp_path / "out.gpkg"
    layers = {"fields": _fields(), "tiles": _empty()}
    paths = write_vector_formats(gpkg, layers, ["parquet", "fgb"])
    assert [p.name for p in paths] == [
        "out_fields.parquet",
        "out_tiles.parquet",
        "out_fields.fgb",
        "out_tiles.fgb",
    ]
    assert _names(tmp_path) == {p.name for p in paths}
    for path in paths:
        name = path.stem.removeprefix("out_")
        back = gpd.read_parquet(path) if path.suffix == ".parquet" else gpd.read_file(path)
        assert back.crs == layers[name].crs
        assert len(back) == len(layers[name])
        if name == "fields":  # FlatGeobuf's spatial index reorders features
            back = back.sort_values("field_id")
            assert back["field_id"].tolist() == [1, 2, 3]
            assert back.geometry.area.round(3).tolist() == layers[name].geometry.area.round(3).tolist()
    assert pyogrio.read_info(vector_format_path(gpkg, "tiles", "fgb"))["geometry_type"] == "MultiPolygon"


def test_vector_formats_check_all_outputs_first(tmp_path: Path) -> None:
    gpkg = tmp_path / "out.gpkg"
    (tmp_path / "out_tiles.fgb").write_text("old")
    with pytest.raises(OutputExistsError, match=r"out_tiles\.fgb"):
        write_vector_formats(gpkg, {"fields": _fields(), "tiles": _empty()}, ["parquet", "fgb"])
    assert _names(tmp_path) == {"out_tiles.fgb"}
    with pytest.raises(ValueError, match="unknown vector format"):
        write_vector_formats(gpkg, {"fields": _fields()}, ["shp"])


def test_reproject_layers() -> None:
    fields = _fields()
    out = reproject_layers({"fields": fields}, "EPSG:4326")
    assert out["fields"].crs == "EPSG:4326"
    west, _, east, _ = out["fields"].total_bounds
    assert 14.99 < west < east < 15.01
    assert reproject_layers({"fields": fields}, 32633)["fields"] is fields


# --------------------------------------------------------------------------------------------- styles
def test_styles_are_well_formed_qml() -> None:
    kinds = ("singleSymbol", "categorizedSymbol", "graduatedSymbol")
    for qml, kind in zip(_styles().values(), kinds, strict=True):
        assert qml.startswith("<!DOCTYPE qgis")
        root = ET.fromstring(qml.split("\n", 1)[1])
        assert root.tag == "qgis"
        renderer = root.find("renderer-v2")
        assert renderer is not None and renderer.get("type") == kind
    outline = ET.fromstring(outline_qml((1, 2, 3, 255), 0.4).split("\n", 1)[1])
    props = {o.get("name"): o.get("value") for o in outline.iter("Option") if o.get("name")}
    assert (props["style"], props["outline_color"], props["outline_width"]) == ("no", "1,2,3,255", "0.4")
    with pytest.raises(ValueError, match="colour"):
        outline_qml((0, 0, 300, 255))
    with pytest.raises(ValueError, match="lower <= upper"):
        graduated_qml("x", [(1.0, 0.0, "bad", (0, 0, 0, 255))])


# --------------------------------------------------------------------------------------------- COG
def _grid(width: int, height: int) -> SceneGrid:
    return SceneGrid(RioCRS.from_user_input(CRS).to_wkt(), TRANSFORM, width, height)


def _write_cog(path: Path, full: np.ndarray, piece: tuple[int, int], **kwargs) -> None:
    """Write ``full`` in windows of ``piece`` (rows, cols), edge windows smaller."""
    height, width = full.shape
    with CogWriter(path, _grid(width, height), **kwargs) as cog:
        for row in range(0, height, piece[0]):
            for col in range(0, width, piece[1]):
                window = Window(col, row, min(piece[1], width - col), min(piece[0], height - row))
                cog.write(full[row : row + window.height, col : col + window.width], window)


def _gdalinfo(path: Path) -> str:
    if shutil.which("gdalinfo") is None:
        pytest.skip("gdalinfo (gdal-bin) is not installed")
    proc = subprocess.run(["gdalinfo", str(path)], capture_output=True, text=True, check=True, timeout=60)
    assert "warning" not in proc.stderr.lower(), proc.stderr
    return proc.stdout


def _check_cog(path: Path, full: np.ndarray, blocksize: int) -> rasterio.DatasetReader:
    src = rasterio.open(path)
    assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    assert src.crs == CRS and src.transform == TRANSFORM
    assert src.block_shapes == [(blocksize, blocksize)]
    assert src.overviews(1) == overview_factors(full.shape[1], full.shape[0], blocksize) != []
    assert np.array_equal(src.read(1), full)
    return src


def test_cog_uint8_classes_with_colour_table(tmp_path: Path) -> None:
    full = np.random.default_rng(0).integers(0, 4, (700, 600), dtype=np.uint8)
    path = tmp_path / "classes.tif"
    _write_cog(
        path,
        full,
        (300, 250),
        dtype="uint8",
        nodata=0,
        colormap=CLASS_COLOURS,
        blocksize=256,
        band_description="class",
    )
    with _check_cog(path, full, 256) as src:
        assert src.colormap(1)[3] == CLASS_COLOURS[3]
        assert src.nodata == 0 and src.descriptions == ("class",)
    info = _gdalinfo(path)
    assert "LAYOUT=COG" in info and "Color Table" in info and "ColorInterp=Palette" in info
    assert "Overviews: 300x350, 150x175" in info
    assert "Origin = (500000.000000000000000,5000000.000000000000000)" in info
    assert 'ID["EPSG",32633]' in info
    assert _names(tmp_path) == {"classes.tif"}


def test_cog_uint32_ids(tmp_path: Path) -> None:
    full = np.random.default_rng(1).integers(0, 2**32 - 1, (300, 280), dtype=np.int64)
    path = tmp_path / "ids.tif"
    _write_cog(path, full, (128, 100), dtype="uint32", nodata=0, blocksize=128)
    with _check_cog(path, full, 128) as src:
        assert src.dtypes == ("uint32",)
    assert "LAYOUT=COG" in _gdalinfo(path)
    assert _names(tmp_path) == {"ids.tif"}


def test_cog_failure_keeps_existing_and_removes_temps(tmp_path: Path) -> None:
    path = tmp_path / "ids.tif"
    path.write_bytes(b"old")
    kwargs: dict[str, Any] = {
        "grid": _grid(64, 64),
        "dtype": "uint32",
        "nodata": 0,
        "blocksize": 32,
    }
    with pytest.raises(OutputExistsError):
        CogWriter(path, **kwargs)
    with pytest.raises(ValueError, match="leaves"), CogWriter(path, overwrite=True, **kwargs) as cog:
        cog.write(np.ones((32, 32), np.uint32), Window(0, 0, 32, 32))
        cog.write(np.ones((32, 32), np.uint32), Window(48, 0, 32, 32))
    assert path.read_bytes() == b"old"
    assert _names(tmp_path) == {"ids.tif"}


def test_cog_rejects_bad_arguments(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"grid": _grid(64, 64), "nodata": 0}
    with pytest.raises(ValueError, match="colour table"):
        CogWriter(tmp_path / "a.tif", dtype="uint32", colormap=CLASS_COLOURS, **kwargs)
    with pytest.raises(ValueError, match="multiple of 16"):
        CogWriter(tmp_path / "a.tif", dtype="uint8", blocksize=100, **kwargs)
    with pytest.raises(ValueError, match="resampling"):
        CogWriter(tmp_path / "a.tif", dtype="uint8", overview_resampling="fancy", **kwargs)
    with CogWriter(tmp_path / "a.tif", dtype="uint8", blocksize=32, **kwargs) as cog:
        with pytest.raises(ValueError, match="do not fit"):
            cog.write(np.full((8, 8), 256), Window(0, 0, 8, 8))
        with pytest.raises(ValueError, match="shape"):
            cog.write(np.zeros((8, 9), np.uint8), Window(0, 0, 8, 8))
    assert _names(tmp_path) == {"a.tif"}


# --------------------------------------------------------------------------------------------- QGIS
@pytest.mark.skipif(QGIS_PROCESS is None, reason="QGIS is not installed (apt-get install -y qgis)")
def test_qgis_checkvalidity_finds_no_invalid_geometry(gpkg: Path, tmp_path: Path) -> None:
    results = qgis_check_validity(gpkg, "fields", tmp_path)
    assert (results["VALID_COUNT"], results["INVALID_COUNT"], results["ERROR_COUNT"]) == (3, 0, 0)


_QGIS_STYLE_PROBE = """
import json, os, sys
from qgis.core import QgsApplication, QgsVectorLayer
app = QgsApplication([], False)
app.initQgis()
out = {}
for name in sys.argv[2:]:
    layer = QgsVectorLayer(f"{sys.argv[1]}|layername={name}", name, "ogr")
    renderer = layer.renderer()
    if renderer.type() == "singleSymbol":
        detail = renderer.symbol().symbolLayer(0).strokeColor().name()
    else:
        items = renderer.categories() if renderer.type() == "categorizedSymbol" else renderer.ranges()
        detail = [item.label() for item in items]
    out[name] = [layer.isValid(), renderer.type(), detail]
print(json.dumps(out), flush=True)
os._exit(0)  # QGIS 3.22 may crash in exitQgis() while tearing down providers
"""


def _qgis_python() -> str | None:
    python = "/usr/bin/python3"
    if QGIS_PROCESS is None or not os.path.exists(python):
        return None
    probe = subprocess.run([python, "-c", "import qgis.core"], capture_output=True, timeout=60)
    return python if probe.returncode == 0 else None


@pytest.mark.skipif(QGIS_PROCESS is None, reason="QGIS is not installed (apt-get install -y qgis)")
def test_qgis_opens_layers_with_stored_styles(gpkg: Path, tmp_path: Path) -> None:
    python = _qgis_python()
    if python is None:
        pytest.skip("QGIS's Python bindings (python3-qgis) are not importable by /usr/bin/python3")
    proc = subprocess.run(
        [python, "-c", _QGIS_STYLE_PROBE, str(gpkg), "fields", "crop_health", "tiles"],
        capture_output=True,
        text=True,
        env=qgis_env(tmp_path),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {
        "fields": [True, "singleSymbol", "#ffff00"],
        "crop_health": [True, "categorizedSymbol", ["class 1", "class 2", "class 3"]],
        "tiles": [True, "graduatedSymbol", ["first", "rest"]],
    }
