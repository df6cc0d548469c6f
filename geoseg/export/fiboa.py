"""fiboa (Field Boundaries for Agriculture, https://fiboa.org) GeoParquet for the field layers.

fiboa 0.3.0 builds on Vecorel 0.1.0. A file carries, per feature: ``id`` (string), ``geometry``, ``collection``
(which collection the feature belongs to), fiboa's ``metrics:area`` (m²), ``metrics:perimeter`` (m),
``determination:method`` (``auto-imagery`` here) and ``determination:datetime`` (the imagery's time, when the
inputs say it); and in the Parquet schema metadata under ``collection`` a JSON object whose ``schemas`` maps each
collection to the list of schema URIs it conforms to. geoseg's own columns (verdict, index statistics, class
shares, ...) follow as they are.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from geoseg.atomic import atomic_output

VECOREL_SCHEMA = "https://vecorel.org/specification/v0.1.0/schema.yaml"
FIBOA_SCHEMA = "https://fiboa.org/specification/v0.3.0/schema.yaml"
SCHEMAS = (VECOREL_SCHEMA, FIBOA_SCHEMA)
METHOD = "auto-imagery"
"""``determination:method``: boundaries determined automatically from imagery."""
_REQUIRED = ("id", "collection", "geometry")
_STRINGS = ("id", "collection", "determination:method")
_RENAMED = {"area_m2": "metrics:area", "perimeter_m": "metrics:perimeter"}


def fiboa_frame(layer: gpd.GeoDataFrame, collection: str, determined: datetime | None) -> gpd.GeoDataFrame:
    """A field layer with fiboa's core columns first, then geoseg's own; features with no area dropped."""
    frame = layer.rename(columns=_RENAMED)
    frame = frame[frame["metrics:area"] > 0]
    core = pd.DataFrame(
        {
            "id": frame["id"].astype(str).to_numpy(),
            "collection": collection,
            "metrics:area": frame["metrics:area"].astype("float32").to_numpy(),
            "metrics:perimeter": frame["metrics:perimeter"].astype("float32").to_numpy(),
            "determination:method": METHOD,
        }
    )
    if determined is not None:
        stamp = pd.Timestamp(determined)
        core["determination:datetime"] = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    own = frame.drop(columns=[*core.columns.intersection(frame.columns), frame.geometry.name]).reset_index(drop=True)
    own = own.rename(columns={c: f"geoseg:{c}" for c in own.columns})
    return gpd.GeoDataFrame(pd.concat([core, own], axis=1), geometry=list(frame.geometry), crs=frame.crs)


def write_fiboa(
    layer: gpd.GeoDataFrame, path: Path, collection: str, determined: datetime | None, overwrite: bool
) -> Path:
    """Write one field layer as fiboa GeoParquet (atomically)."""
    frame = fiboa_frame(layer, collection, determined)
    with atomic_output(Path(path), overwrite) as tmp:
        frame.to_parquet(tmp, index=False, compression="zstd", write_covering_bbox=True)
        table = pq.read_table(tmp)  # GeoParquet's "geo" metadata written by geopandas, plus the collection
        metadata = {
            **(table.schema.metadata or {}),
            b"collection": json.dumps(collection_metadata(collection)).encode(),
        }
        table = table.cast(_fiboa_types(table.schema)).replace_schema_metadata(metadata)
        pq.write_table(table, tmp, compression="zstd")
    return Path(path)


def _fiboa_types(schema: pa.Schema) -> pa.Schema:
    """fiboa's Parquet types: plain strings, millisecond timestamps, required core columns not nullable."""
    fields = []
    for f in schema:
        kind = f.type
        if pa.types.is_large_string(kind) or (pa.types.is_null(kind) and f.name in _STRINGS):
            kind = pa.string()  # an empty layer's string columns arrive untyped
        elif pa.types.is_timestamp(kind):
            kind = pa.timestamp("ms", tz="UTC")
        fields.append(pa.field(f.name, kind, nullable=f.nullable and f.name not in _REQUIRED))
    return pa.schema(fields, metadata=schema.metadata)


def collection_metadata(collection: str) -> dict[str, object]:
    """The Vecorel collection object: the schemas each collection conforms to."""
    return {"schemas": {collection: list(SCHEMAS)}}
