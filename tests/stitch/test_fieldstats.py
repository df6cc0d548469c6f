"""Per-field statistics and verdicts: exact for any tile size, and the verdict rules one by one."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from geoseg.export.verdict import FieldObservation, observe, verdict
from geoseg.inputs.tiles import Tile, TileGrid
from geoseg.models.base import InstanceInfo, InstanceOutput
from geoseg.models.crop_health.catalog import HEALTH_CLASSES
from geoseg.spec.job import VerdictRules
from geoseg.stitch.fieldstats import HIST_BINS, StatsSource, hist_quantile
from geoseg.stitch.stitcher import LayerStitcher, StitchedObject, tile_layer

H, W = 90, 110
N_CLASSES = len(HEALTH_CLASSES) + 1


def _scene(seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rectangular fields (ids 1..), an NDVI layer and health classes, with a 'cloud' where nothing is observed."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((H, W), np.int32)
    next_id = 1
    for r in range(2, H - 10, 17):
        for c in range(1, W - 10, 21):
            labels[r : r + rng.integers(8, 15), c : c + rng.integers(10, 19)] = next_id
            next_id += 1
    ndvi = rng.uniform(-0.2, 0.95, (H, W)).astype(np.float32)
    classes = (np.digitize(ndvi, [0.25, 0.45, 0.65]) + 1).astype(np.uint8)
    cloud = np.zeros((H, W), bool)
    cloud[30:60, 40:85] = True  # covers some fields whole, cuts others
    classes[cloud] = 0
    ndvi[cloud] = np.nan
    return labels, ndvi, classes


def _window(a: np.ndarray, tile: Tile) -> np.ndarray:
    out = np.zeros((int(tile.read.height), int(tile.read.width)), a.dtype)
    if a.dtype.kind == "f":
        out[:] = np.nan
    r0, c0 = int(tile.read.row_off), int(tile.read.col_off)
    rs, cs, re_, ce = max(r0, 0), max(c0, 0), min(r0 + out.shape[0], H), min(c0 + out.shape[1], W)
    out[rs - r0 : re_ - r0, cs - c0 : ce - c0] = a[rs:re_, cs:ce]
    return out


def _stitched(tile_size: int, halo: int) -> dict[int, StitchedObject]:
    labels, ndvi, classes = _scene()
    grid = TileGrid(W, H, tile_size, halo)
    stitcher = LayerStitcher(grid)
    ids = np.unique(labels[labels > 0])
    for tile in grid:
        lab = _window(labels, tile)
        output = InstanceOutput(lab, [InstanceInfo(int(i), 1.0) for i in np.unique(lab[lab > 0])])
        source = StatsSource(_window(classes, tile), N_CLASSES, {"ndvi": _window(ndvi, tile)}, ("ndvi",))
        layer, _ = tile_layer(output, tile, source)
        stitcher.add(tile, layer)
    objects = stitcher.objects()
    assert len(objects) == len(ids)
    by_field = {}
    for obj in objects:  # the field an object is: the label under a point inside it
        point = shapely.point_on_surface(obj.geometry)
        by_field[int(labels[int(point.y), int(point.x)])] = obj
    return by_field


def _truth(field: int) -> dict[str, float]:
    labels, ndvi, classes = _scene()
    inside = labels == field
    padded = np.pad(labels, 1)
    observed = np.pad(classes > 0, 1)
    sides = masked_sides = 0
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        neighbour = padded[1 + dr : 1 + dr + H, 1 + dc : 1 + dc + W]
        edge = inside & (neighbour != field)
        sides += int(edge.sum())
        masked_sides += int((edge & ~observed[1 + dr : 1 + dr + H, 1 + dc : 1 + dc + W]).sum())
    values = ndvi[inside & ~np.isnan(ndvi)]
    hist = np.bincount(np.clip(((values + 1) / 2 * HIST_BINS).astype(int), 0, HIST_BINS - 1), minlength=HIST_BINS)
    return {
        "pixels": int(inside.sum()),
        "masked": int((inside & (classes == 0)).sum()),
        "sides": sides,
        "masked_sides": masked_sides,
        "mean": float(values.mean()) if values.size else float("nan"),
        "median": hist_quantile(hist, 0.5),
        "p10": hist_quantile(hist, 0.1),
        "counts": np.bincount(classes[inside], minlength=N_CLASSES).tolist(),
    }


@pytest.mark.parametrize(("tile_size", "halo"), [(16, 1), (32, 3), (50, 2), (128, 4)])
def test_field_statistics_equal_the_whole_scene_answer_for_any_tile_size(tile_size, halo):
    for field, obj in _stitched(tile_size, halo).items():
        truth = _truth(field)
        assert obj.pixels == truth["pixels"]
        assert obj.masked_pixels == truth["masked"]
        assert (obj.edge_sides, obj.edge_sides_masked) == (truth["sides"], truth["masked_sides"])
        assert obj.class_counts is not None and obj.class_counts.tolist() == truth["counts"]
        np.testing.assert_allclose(obj.index_means["ndvi"], truth["mean"], rtol=1e-5)
        np.testing.assert_equal([obj.index_medians["ndvi"], obj.index_p10["ndvi"]], [truth["median"], truth["p10"]])


def test_fields_under_the_cloud_are_not_observed_and_clear_ones_are_judged():
    rules = VerdictRules()
    names = {c.value: c.name for c in HEALTH_CLASSES}
    labels, _, classes = _scene()
    verdicts = {field: verdict(observe(obj, names), rules) for field, obj in _stitched(32, 2).items()}
    from scipy import ndimage

    for field, result in verdicts.items():
        inside = labels == field
        near = ndimage.binary_dilation(inside) & ~inside  # the pixels its outline faces
        if (classes[inside] == 0).all():
            assert result == "not_observed"
        elif (classes[inside | near] > 0).all():
            assert result in {"healthy", "watch", "stressed", "bare"}
    assert "not_observed" in verdicts.values() and len(set(verdicts.values())) >= 2


def _seen(masked=0.0, edge=0.0, **shares) -> FieldObservation:
    base = {"non_vegetation": 0.0, "stressed": 0.0, "moderate": 0.0, "healthy": 1.0}
    return FieldObservation(masked, edge, {**base, **shares})


@pytest.mark.parametrize(
    ("seen", "expected"),
    [
        (_seen(), "healthy"),
        (_seen(masked=0.5), "not_observed"),
        (_seen(edge=0.5), "not_observed"),
        (FieldObservation(0.0, 0.0, {}), "not_observed"),
        (_seen(non_vegetation=0.6, healthy=0.4), "bare"),
        (_seen(stressed=0.3, healthy=0.7), "stressed"),
        (_seen(stressed=0.2, moderate=0.25, healthy=0.55), "watch"),
        (_seen(stressed=0.1, moderate=0.2, healthy=0.7), "healthy"),
    ],
)
def test_verdict_rules(seen, expected):
    assert verdict(seen, VerdictRules(max_masked=0.5, max_edge_masked=0.5)) == expected


def test_scene_relative_classes_use_the_scene_percentiles_of_unmasked_pixels(tmp_path):
    from geoseg.models.crop_health.model import class_bounds
    from geoseg.plan.job import plan_job
    from geoseg.spec.job import parse_spec
    from geoseg.testutils.rasters import write_raster

    rng = np.random.default_rng(5)
    red = rng.integers(500, 3000, (60, 80)).astype(np.uint16)
    nir = rng.integers(1000, 6000, (60, 80)).astype(np.uint16)
    cloud = np.zeros((60, 80), np.uint8)
    cloud[:, :30] = 1
    for name, array in (("red", red), ("nir", nir), ("cloud", cloud)):
        write_raster(tmp_path / f"{name}.tif", array)
    spec = parse_spec(
        {
            "inputs": {
                "bands": {"red": {"path": "red.tif"}, "nir": {"path": "nir.tif"}},
                "mask": {"path": "cloud.tif", "kind": "binary"},
            },
            "models": [{"type": "crop_health", "classes_by": "percentiles"}],
            "output": {"path": "out.gpkg"},
        },
        base=tmp_path,
    )
    plan = plan_job(spec)
    ndvi = ((nir.astype(float) - red) / (nir.astype(float) + red))[:, 30:]  # the unmasked part only
    np.testing.assert_allclose(plan.scene_info.index_percentiles["ndvi"], np.percentile(ndvi, np.arange(101)), 1e-5)
    expected = np.percentile(ndvi, [10, 30, 60])
    np.testing.assert_allclose(class_bounds(spec.models[0], plan.scene_info), expected, rtol=1e-5)
