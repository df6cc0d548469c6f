"""Planning a job: the tile grid clamped to the scene, the memory check."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.plan import job as plan_module
from geoseg.plan.job import check_memory, plan_job
from geoseg.spec.job import AoiSpec, parse_spec
from geoseg.testutils.rasters import write_raster


def _spec(tmp_path, tile_size, rows=80, cols=100, **compute):
    rng = np.random.default_rng(0)
    for band in ("red", "nir"):
        write_raster(tmp_path / f"{band}.tif", rng.integers(300, 900, (rows, cols)).astype("uint16"), nodata=0)
    return parse_spec(
        {
            "inputs": {"bands": {"red": {"path": "red.tif"}, "nir": {"path": "nir.tif"}}, "scale": 0.0001},
            "tiling": {"tile_size": tile_size, "halo": 8},
            "models": [{"type": "crop_health"}],
            "output": {"path": "out.gpkg"},
            "compute": compute,
        },
        base=tmp_path,
    )


def test_a_tile_larger_than_the_scene_is_clamped(tmp_path):
    """tile_size 8192 on a 100 x 80 px scene: one tile reading 116 px, not 8208 px (which took 22 GB per actor)."""
    plan = plan_job(_spec(tmp_path, 8192))
    assert (plan.grid.tile_size, plan.grid.read_size, len(plan.tiles)) == (100, 116, 1)
    assert plan_job(_spec(tmp_path, 64)).grid.tile_size == 64  # smaller than the scene: as asked


def test_tiles_too_large_for_the_machine_are_named(tmp_path, monkeypatch):
    plan = plan_job(_spec(tmp_path, 64, max_in_flight=8))
    assert check_memory(plan) is None
    monkeypatch.setattr(plan_module, "machine_memory_mb", lambda: 0.5)
    warning = check_memory(plan)
    assert warning is not None
    assert "8 tiles of 80 px" in warning and "lower tiling.tile_size" in warning


def test_describe_uses_the_clamped_grid(tmp_path):
    text = plan_module.describe(plan_job(_spec(tmp_path, 8192)))
    assert "1 x 1 tiles of 100 px + 8 px halo" in text


def test_a_bow_tie_aoi_is_repaired(tmp_path, caplog):
    """A self-intersecting AOI (a bow-tie) is made valid, with a warning, instead of a TopologyException."""
    spec = _spec(tmp_path, 32)
    bow_tie = "POLYGON ((500000 4999200, 500800 5000000, 500800 4999200, 500000 5000000, 500000 4999200))"
    spec = spec.model_copy(update={"aoi": AoiSpec(wkt=bow_tie, crs="EPSG:32633")})
    with caplog.at_level("WARNING"):
        plan = plan_job(spec)
    assert "Self-intersection" in caplog.text and "repaired" in caplog.text
    assert plan.scene.aoi is not None and plan.scene.aoi.is_valid
    assert plan.scene.aoi.area == pytest.approx(2 * 800 * 400 / 2)  # its two triangles


def test_tiles_without_a_valid_pixel_are_skipped(tmp_path):
    """A mostly-nodata scene of 1,600 tiles: only the 16 tiles over its valid square are planned (the others would
    each be read and run for nothing); a job of few tiles keeps every tile."""
    raw = _spec(tmp_path, 32).model_dump(mode="json")
    values = np.zeros((1280, 1280), "uint16")
    values[200:300, 200:300] = 500
    for band in ("red", "nir"):
        write_raster(tmp_path / f"{band}.tif", values, nodata=0)
    plan = plan_job(parse_spec(raw, base=tmp_path))
    assert len(plan.grid) == 1600
    assert sorted((t.row, t.col) for t in plan.tiles) == [(r, c) for r in range(6, 10) for c in range(6, 10)]
    raw["tiling"]["tile_size"] = 256  # 25 tiles: all kept
    assert len(plan_job(parse_spec(raw, base=tmp_path)).tiles) == 25
