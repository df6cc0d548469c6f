"""GIS-ready vector outputs: one GeoPackage (layers, attribute tables, QGIS styles), GeoParquet, FlatGeobuf.

Every output is written to a temporary file in its final folder and renamed onto its final path only once it
is complete (:func:`geoseg.atomic.atomic_output`), so a crash never leaves a half-written file under the expected
name and an existing output survives a failed run.

Reprojection is the caller's: ``gdf.to_crs(spec.output.crs)`` (or :func:`reproject_layers` for a mapping of
layers) before writing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
from pyproj import CRS

from geoseg.atomic import atomic_output, check_output_absent
from geoseg.plan.outputs import VECTOR_FORMATS, vector_format_path

__all__ = [
    "GEOMETRY_COLUMN",
    "VECTOR_FORMATS",
    "LayerAppender",
    "check_names",
    "fill_geopackage",
    "reproject_layers",
    "vector_format_path",
    "write_geopackage",
    "write_vector_formats",
]

GEOMETRY_COLUMN = "geom"
"""Name of the geometry column in GeoPackage layers (GDAL's default, named in ``layer_styles``)."""


EMPTY_LAYER_GEOMETRY_TYPE = "MultiPolygon"
"""Geometry type of an empty layer whose type is not given (geoseg's layers are polygons)."""

# GeoPackage 1.4, the default of pyogrio's bundled GDAL (3.12), makes GDAL 3.6 (Debian 12's gdal-bin, and the
# QGIS 3.22 built on it) warn "This version of GeoPackage ... may only be partially supported".
# 1.3 has all we use.
_GPKG_DATASET_OPTIONS = {"VERSION": "1.3"}
_GPKG_LAYER_OPTIONS = {"SPATIAL_INDEX": "YES", "GEOMETRY_NAME": GEOMETRY_COLUMN}
_RESERVED_PREFIXES = ("gpkg_", "rtree_", "sqlite_")
_STYLES_TABLE = "layer_styles"
_MULTI = {"Point": "MultiPoint", "LineString": "MultiLineString", "Polygon": "MultiPolygon"}


# --------------------------------------------------------------------------------------------- GeoPackage
def write_geopackage(
    path: Path,
    layers: Mapping[str, gpd.GeoDataFrame],
    *,
    tables: Mapping[str, pd.DataFrame] | None = None,
    styles: Mapping[str, str] | None = None,
    geometry_types: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> None:
    """Write vector layers, attribute tables and QGIS styles into one GeoPackage, atomically.

    Layers get a spatial index; a layer mixing single and multi geometries (Polygon and MultiPolygon) is
    written as the multi type. An empty layer is still created, with its CRS and geometry type. GeoDataFrame
    indexes are not written: keep ids in columns.

    Args:
        path: The ``.gpkg`` to write.
        layers: Layer name -> features; every layer needs a CRS.
        tables: Table name -> rows without geometry (e.g. job metadata), written as attribute tables.
        styles: Layer name -> QML (see :mod:`geoseg.export.styles`), stored in ``layer_styles`` as the layer's
            default QGIS style.
        geometry_types: Layer name -> OGR geometry type (``"MultiPolygon"``, ...) to pin a layer's type; by
            default it is inferred from the data, and an empty layer is a MultiPolygon layer.
        overwrite: Replace an existing ``path``.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
        ValueError: A name is reserved or used twice, a style names no layer, or a layer has no CRS.
    """
    tables = tables or {}
    styles = styles or {}
    _check_names(layers, tables, styles)
    with atomic_output(Path(path), overwrite) as tmp:
        fill_geopackage(tmp, layers, tables=tables, styles=styles, geometry_types=geometry_types)


def fill_geopackage(
    path: Path,
    layers: Mapping[str, gpd.GeoDataFrame],
    *,
    tables: Mapping[str, pd.DataFrame] | None = None,
    styles: Mapping[str, str] | None = None,
    geometry_types: Mapping[str, str] | None = None,
) -> None:
    """Add layers, tables and styles to a GeoPackage being written (:func:`write_geopackage` without the checks
    and the atomic rename; for a file that :class:`LayerAppender` also writes to)."""
    geometry_types = geometry_types or {}
    for name, gdf in layers.items():
        _write_layer(gdf, path, name, "GPKG", geometry_types.get(name), _GPKG_LAYER_OPTIONS)
    for name, table in (tables or {}).items():
        _write_table(table, path, name)
    if styles:
        _write_table(_styles_table(styles), path, _STYLES_TABLE, layer_options={"FID": "id"})


def check_names(layers: Iterable[str], tables: Iterable[str], styles: Iterable[str]) -> None:
    """Fail on reserved, empty or duplicate layer / table names, or styles for layers not written (ValueError)."""
    _check_names(dict.fromkeys(layers), dict.fromkeys(tables), dict.fromkeys(styles))


class LayerAppender:
    """Writes one GeoPackage layer batch by batch, with the geometry type :func:`write_geopackage` would give it.

    ``declared`` is a guess at the type of the whole layer (None: take the first batch's, when it is the whole
    layer). Batches that do not fit the guess are not written; :attr:`redo` then names the right type, and the
    caller writes all batches again into a fresh appender with it.
    """

    def __init__(self, path: Path, name: str, declared: str | None, replace: bool = False) -> None:
        self.path, self.name, self.declared = Path(path), name, declared
        self.rows = 0
        self.present: set[str] = set()
        self._options = {**_GPKG_LAYER_OPTIONS, **({"OVERWRITE": "YES"} if replace else {})}
        self._started = self._misfit = False

    def append(self, gdf: gpd.GeoDataFrame) -> None:
        present = set(gdf.geometry.geom_type.dropna().unique())
        self.present |= present
        if self._misfit:
            return
        if self.declared is None:
            self.declared = _infer_geometry_type(present)
        singles = {single for single, multi in _MULTI.items() if multi == self.declared}
        if present - {self.declared} - singles:
            self._misfit = True
            return
        if not self._started:
            _write_layer(gdf, self.path, self.name, "GPKG", self.declared, self._options)
            self._started = True
        elif len(gdf):
            pyogrio.write_dataframe(
                gdf, self.path, layer=self.name, driver="GPKG", append=True, promote_to_multi=bool(present & singles)
            )
        self.rows += len(gdf)

    @property
    def redo(self) -> str | None:
        """The layer's geometry type when the batches must be written again with it; None when they were right."""
        inferred = _infer_geometry_type(self.present)
        return inferred if self._misfit or self.declared != inferred else None


def _check_names(layers: Mapping[str, object], tables: Mapping[str, object], styles: Mapping[str, object]) -> None:
    if not layers and not tables:
        raise ValueError("write_geopackage needs at least one layer or table")
    names = [*layers, *tables]
    lowered = [name.lower() for name in names]  # SQLite table names are case-insensitive
    duplicates = sorted({name for name, low in zip(names, lowered, strict=True) if lowered.count(low) > 1})
    if duplicates:
        raise ValueError(f"layer / table names must be unique (case-insensitive): {duplicates}")
    for name, low in zip(names, lowered, strict=True):
        if not name or low == _STYLES_TABLE or low.startswith(_RESERVED_PREFIXES):
            raise ValueError(f"{name!r} is reserved in a GeoPackage; choose another layer / table name")
    unknown = sorted(set(styles) - set(layers))
    if unknown:
        raise ValueError(f"styles given for layers that are not written: {unknown}")


def _write_layer(
    gdf: gpd.GeoDataFrame,
    path: Path,
    name: str,
    driver: str,
    geometry_type: str | None,
    layer_options: Mapping[str, str],
) -> None:
    if gdf.crs is None:
        raise ValueError(f"layer {name!r} has no CRS; set it with gdf.set_crs(...) before export")
    geometry_type, promote = _geometry_type(gdf, name, geometry_type)
    pyogrio.write_dataframe(
        gdf,
        path,
        layer=name,
        driver=driver,
        geometry_type=geometry_type,
        promote_to_multi=promote,
        dataset_options=_GPKG_DATASET_OPTIONS if driver == "GPKG" else None,
        layer_options=dict(layer_options),
    )


def _geometry_type(gdf: gpd.GeoDataFrame, name: str, declared: str | None) -> tuple[str, bool]:
    """The layer's OGR geometry type and whether single geometries must be promoted to multi."""
    present = set(gdf.geometry.geom_type.dropna().unique())
    if declared is None:
        declared = _infer_geometry_type(present)
    singles = {single for single, multi in _MULTI.items() if multi == declared}
    if declared not in ("Unknown", "Geometry"):
        stray = sorted(present - {declared} - singles)
        if stray:
            raise ValueError(f"layer {name!r} is declared {declared} but holds {stray}")
    return declared, bool(present & singles)


def _infer_geometry_type(present: set[str]) -> str:
    if not present:
        return EMPTY_LAYER_GEOMETRY_TYPE
    if len(present) == 1:
        return next(iter(present))
    multis = {_MULTI.get(kind, kind) for kind in present}
    return multis.pop() if len(multis) == 1 else "Unknown"


def _write_table(table: pd.DataFrame, path: Path, name: str, layer_options: Mapping[str, str] | None = None) -> None:
    pyogrio.write_dataframe(
        pd.DataFrame(table),
        path,
        layer=name,
        driver="GPKG",
        dataset_options=_GPKG_DATASET_OPTIONS,
        layer_options=dict(layer_options or {}),
    )


def _styles_table(styles: Mapping[str, str]) -> pd.DataFrame:
    """Rows of QGIS's ``layer_styles`` table (the schema QGIS itself creates in a GeoPackage)."""
    now = pd.Timestamp.now(tz="UTC").floor("s")
    rows = [
        {
            "f_table_catalog": "",
            "f_table_schema": "",  # QGIS looks styles up with f_table_schema='' (not NULL)
            "f_table_name": layer,
            "f_geometry_column": GEOMETRY_COLUMN,
            "styleName": layer,
            "styleQML": qml,
            "styleSLD": "",
            "useAsDefault": True,
            "description": "geoseg default style",
            "owner": "",
            "ui": "",
            "update_time": now,
        }
        for layer, qml in styles.items()
    ]
    return pd.DataFrame(rows)


def write_vector_formats(
    gpkg_path: Path,
    layers: Mapping[str, gpd.GeoDataFrame],
    formats: Sequence[str],
    overwrite: bool = False,
) -> list[Path]:
    """Write each layer as GeoParquet (``"parquet"``) and / or FlatGeobuf (``"fgb"``) beside the GeoPackage.

    All outputs are checked for existence before any is written; each is written atomically. FlatGeobuf
    files are spatially indexed, which reorders their features.

    Args:
        gpkg_path: The GeoPackage the files sit beside; names are ``<stem>_<layer>.parquet`` / ``.fgb``.
        layers: Layer name -> features (with a CRS).
        formats: Any of ``"parquet"``, ``"fgb"``.
        overwrite: Replace existing files.

    Returns:
        The written paths, in order of format then layer.

    Raises:
        OutputExistsError: An output exists and ``overwrite`` is false.
        ValueError: An unknown format, or a layer without CRS.
    """
    jobs = [(fmt, name, vector_format_path(gpkg_path, name, fmt)) for fmt in dict.fromkeys(formats) for name in layers]
    for _, _, out in jobs:
        check_output_absent(out, overwrite)
    for fmt, name, out in jobs:
        with atomic_output(out, overwrite) as tmp:
            if fmt == "parquet":
                _write_parquet(layers[name], tmp, name)
            else:
                _write_layer(layers[name], tmp, name, "FlatGeobuf", None, {"SPATIAL_INDEX": "YES"})
    return [out for _, _, out in jobs]


def _write_parquet(gdf: gpd.GeoDataFrame, path: Path, name: str) -> None:
    if gdf.crs is None:
        raise ValueError(f"layer {name!r} has no CRS; set it with gdf.set_crs(...) before export")
    gdf.to_parquet(path, index=False, compression="zstd", write_covering_bbox=True)


# --------------------------------------------------------------------------------------------- reprojection
def reproject_layers(layers: Mapping[str, gpd.GeoDataFrame], crs: object) -> dict[str, gpd.GeoDataFrame]:
    """Reproject every layer to ``crs`` (anything pyproj takes); layers already in it are returned as is.

    Raises:
        ValueError: A layer has no CRS.
    """
    target = CRS.from_user_input(crs)
    out: dict[str, gpd.GeoDataFrame] = {}
    for name, gdf in layers.items():
        if gdf.crs is None:
            raise ValueError(f"layer {name!r} has no CRS; set it with gdf.set_crs(...) before reprojecting")
        out[name] = gdf if CRS.from_user_input(gdf.crs) == target else gdf.to_crs(target)
    return out
