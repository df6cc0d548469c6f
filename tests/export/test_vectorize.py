"""From pixel-space objects to clean, measured map polygons."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import shapely
from affine import Affine
from pyproj import CRS

from geoseg.export.vectorize import fill_holes, measure, objects_frame, to_map
from geoseg.models.crop_health.catalog import HEALTH_CLASSES
from geoseg.plan.outputs import Cleaning
from geoseg.stitch.stitcher import StitchedObject

UTM = CRS.from_epsg(32633)


def _obj(i: int, geom: shapely.Geometry, **kw) -> StitchedObject:
    base: dict[str, Any] = dict(pixels=int(geom.area), score=0.9, cls=0, key=None, stability=None, attrs={},
                                class_counts=None, index_means={}, index_medians={}, fragments=[])  # fmt: skip
    return StitchedObject(id=i, geometry=geom, **{**base, **kw})


def test_to_map_applies_the_scene_transform():
    transform = Affine(10, 0, 500000, 0, -10, 5000000)
    out = to_map(np.array([shapely.box(0, 0, 2, 3)], dtype=object), transform)[0]
    assert out.bounds == (500000, 4999970, 500020, 5000000)


def test_measure_planar_and_geodesic():
    area, perimeter = measure(np.array([shapely.box(0, 0, 100, 50)], dtype=object), UTM)
    assert area[0] == 5000 and perimeter[0] == 300
    # 0.01° x 0.01° at the equator: about 1113 m x 1106 m
    area, _ = measure(np.array([shapely.box(0, 0, 0.01, 0.01)], dtype=object), CRS.from_epsg(4326))
    assert area[0] == pytest.approx(1113.2 * 1105.7, rel=0.01)


def test_fill_holes_keeps_big_holes_only():
    shell = shapely.box(0, 0, 100, 100)
    geom = shell.difference(shapely.box(10, 10, 12, 12)).difference(shapely.box(50, 50, 80, 80))
    (filled,) = fill_holes(np.array([geom], dtype=object), max_hole_m2=100, crs=UTM)
    assert len(filled.interiors) == 1 and filled.area == pytest.approx(100 * 100 - 900)


def test_objects_frame_attributes_cleaning_and_shares():
    transform = Affine(10, 0, 0, 0, -10, 1000)
    counts = np.array([0, 0, 1, 1, 2])  # nodata, non_veg, stressed, moderate, healthy
    objects = [
        _obj(
            1, shapely.box(0, 0, 10, 10), class_counts=counts, index_means={"ndvi": 0.6}, index_medians={"ndvi": 0.61}
        ),
        _obj(2, shapely.box(10, 0, 11, 1)),  # 100 m²: dropped by min_area_m2
    ]
    frame = objects_frame(objects, transform, UTM, Cleaning(min_area_m2=500), stats_classes=HEALTH_CLASSES)
    assert list(frame["id"]) == [1]
    row = frame.iloc[0]
    assert row["area_m2"] == 10000 and row["perimeter_m"] == 400
    assert row["ndvi_mean"] == 0.6 and row["ndvi_median"] == 0.61
    assert row["share_healthy"] == 0.5 and row["share_stressed"] == 0.25 and row["share_non_vegetation"] == 0


def test_simplify_keeps_shared_edges_shared():
    """Coverage simplification: neighbours still tile the plane, no gaps or overlaps."""
    stairs = shapely.Polygon([(0, 0), (10, 0), (10, 1), (9, 1), (9, 2), (8, 2), (8, 10), (0, 10)])
    rest = shapely.box(0, 0, 20, 10).difference(stairs)
    frame = objects_frame([_obj(1, stairs), _obj(2, rest)], Affine.identity(), UTM, Cleaning(simplify=1.5))
    a, b = frame.geometry
    assert a.intersection(b).area == pytest.approx(0, abs=1e-9)
    assert a.union(b).area == pytest.approx(200)
    assert len(a.exterior.coords) < len(stairs.exterior.coords)
