"""Stitched objects -> clean, georeferenced polygons with attributes.

Objects arrive in integer scene pixel coordinates (see :mod:`geoseg.stitch.stitcher`); here they are moved to map
coordinates, cleaned (small holes filled, coverage-preserving simplification, minimum area, valid geometry only)
and measured (area and perimeter in metres, geodesic for geographic CRSs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from affine import Affine
from pyproj import CRS, Geod

from geoseg.export.verdict import verdict_columns
from geoseg.models.base import ClassInfo
from geoseg.plan.outputs import Cleaning
from geoseg.spec.job import VerdictRules
from geoseg.stitch.spool import LayerColumns
from geoseg.stitch.stitcher import StitchedObject

_GEOD = Geod(ellps="WGS84")


def to_map(geoms: np.ndarray, transform: Affine) -> np.ndarray:
    """Move geometries from scene pixel coordinates to map coordinates."""
    a, b, c, d, e, f = transform[:6]

    def apply(xy: np.ndarray) -> np.ndarray:
        return np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f])

    return shapely.transform(geoms, apply)


def measure(geoms: np.ndarray, crs: CRS) -> tuple[np.ndarray, np.ndarray]:
    """Area (m²) and perimeter (m) of each geometry: planar for projected CRSs, geodesic for geographic ones."""
    if crs.is_geographic:
        pairs = [_GEOD.geometry_area_perimeter(g) for g in geoms]
        return np.abs([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    factor = crs.axis_info[0].unit_conversion_factor
    return shapely.area(geoms) * factor**2, shapely.length(geoms) * factor


def fill_holes(geoms: np.ndarray, max_hole_m2: float, crs: CRS) -> np.ndarray:
    """Drop interior rings smaller than ``max_hole_m2``."""
    if max_hole_m2 <= 0:
        return geoms
    return np.array([_fill(g, max_hole_m2, crs) for g in geoms], dtype=object)


def _fill(geom: shapely.Geometry, max_hole_m2: float, crs: CRS) -> shapely.Geometry:
    parts = shapely.get_parts(geom)
    kept = []
    for poly in parts:
        holes = [shapely.Polygon(r) for r in poly.interiors]
        if not holes:
            kept.append(poly)
            continue
        area, _ = measure(np.array(holes, dtype=object), crs)
        big = [h.exterior.coords for h, a in zip(holes, area, strict=True) if a >= max_hole_m2]
        kept.append(shapely.Polygon(poly.exterior.coords, big))
    return kept[0] if len(kept) == 1 else shapely.MultiPolygon(kept)


def clean(geoms: np.ndarray, cleaning: Cleaning, crs: CRS, fill: bool) -> np.ndarray:
    """Fill holes, simplify (coverage-preserving) and make valid."""
    if fill:
        geoms = fill_holes(geoms, cleaning.fill_holes_m2, crs)
    if cleaning.simplify > 0 and len(geoms):
        geoms = shapely.coverage_simplify(geoms, cleaning.simplify)
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        geoms[invalid] = shapely.make_valid(geoms[invalid], method="structure", keep_collapsed=False)
    return geoms


def objects_frame(
    objects: Sequence[StitchedObject],
    transform: Affine,
    crs: CRS,
    cleaning: Cleaning,
    classes: Sequence[ClassInfo] = (),
    stats_classes: Sequence[ClassInfo] = (),
    instance: bool = True,
    verdict_rules: VerdictRules | None = None,
    columns: LayerColumns | None = None,
) -> gpd.GeoDataFrame:
    """Build a layer: one row per object, attributes per the object kind.

    Args:
        objects: stitched objects of one layer.
        transform: scene transform (pixel -> map).
        crs: scene CRS.
        cleaning: clean-up settings.
        classes: classes of a semantic layer (gives ``class_name``).
        stats_classes: health classes whose shares are reported per object.
        instance: instance layer (score, holes filled) or semantic zones.
        verdict_rules: per-object verdict rules (instance layers of a job with a crop-health model).
        columns: the layer's optional columns when ``objects`` is one batch of it (default: from ``objects``).
    """
    columns = columns or LayerColumns.of(objects)
    geoms = to_map(np.array([o.geometry for o in objects], dtype=object), transform)
    geoms = clean(geoms, cleaning, crs, fill=instance)
    area, perimeter = measure(geoms, crs)
    frame = pd.DataFrame({"id": np.array([o.id for o in objects], dtype=np.int64)})
    if instance:
        frame["score"] = [round(o.score, 4) for o in objects]
        if columns.stability:
            frame["stability"] = [o.stability for o in objects]
        if columns.prompts:
            frame["prompt_id"] = [o.key for o in objects]
            for name in sorted(columns.prompt_attrs):
                frame[f"prompt_{name}"] = [o.attrs.get(name) for o in objects]
    else:
        names = {c.value: c.name for c in classes}
        frame["class"] = np.array([o.cls for o in objects], dtype=np.int32)
        frame["class_name"] = [names.get(o.cls, str(o.cls)) for o in objects]
    frame["pixels"] = np.array([o.pixels for o in objects], dtype=np.int64)
    frame["area_m2"] = np.round(area, 2)
    frame["perimeter_m"] = np.round(perimeter, 2)
    _add_stats(frame, objects, stats_classes, columns if instance else replace(columns, medians=set()))
    if instance and verdict_rules is not None and stats_classes:
        names = {c.value: c.name for c in stats_classes}
        for column, values in verdict_columns(objects, names, verdict_rules).items():
            frame[column] = values
    gdf = gpd.GeoDataFrame(frame, geometry=list(geoms), crs=crs)
    keep = (gdf["area_m2"] >= cleaning.min_area_m2) & ~gdf.geometry.is_empty
    if cleaning.max_area_m2 is not None:
        keep &= gdf["area_m2"] <= cleaning.max_area_m2
    if cleaning.max_edge_masked is not None and "share_edge_masked" in gdf:
        keep &= gdf["share_edge_masked"] < cleaning.max_edge_masked  # slivers between clouds
    return gdf[keep].reset_index(drop=True)


def _add_stats(
    frame: pd.DataFrame, objects: Sequence[StitchedObject], stats_classes: Sequence[ClassInfo], columns: LayerColumns
) -> None:
    for name in sorted(columns.indices):
        frame[f"{name}_mean"] = [round(o.index_means.get(name, np.nan), 4) for o in objects]
        if name in columns.medians:
            frame[f"{name}_median"] = [round(o.index_medians.get(name, np.nan), 4) for o in objects]
            frame[f"{name}_p10"] = [round(o.index_p10.get(name, np.nan), 4) for o in objects]
    if stats_classes and columns.class_counts:
        for info in stats_classes:
            frame[f"share_{info.name}"] = [_share(o, info.value) for o in objects]


def _share(obj: StitchedObject, value: int) -> float:
    if obj.class_counts is None:
        return float("nan")
    valid = obj.class_counts[1:].sum()
    return round(float(obj.class_counts[value] / valid), 4) if valid else float("nan")
