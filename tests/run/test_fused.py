"""Cheap CPU models run each tile start to finish in a tile worker: the same outputs as the split pipeline (read
task -> model actor -> finish task), and the same resume, retries and failure reports."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio

from geoseg.errors import TileFailedError
from geoseg.inputs.tiles import TileGrid, strip_order
from geoseg.pipeline import run_job
from geoseg.run.workdir import tile_path
from geoseg.spec.job import parse_spec
from geoseg.testutils.faults import (
    assert_same_outputs,
    corrupt_nir_bands,
    kill_model_actors,
    saved_tiles,
    wait_for_tiles,
)
from geoseg.testutils.scenes import FieldScene, write_field_scene

pytestmark = pytest.mark.usefixtures("ray_local")
TILES = 99
"""700 x 520 px in tiles of 64 px: 11 x 9."""


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> FieldScene:
    return write_field_scene(tmp_path_factory.mktemp("fused") / "scene", 700, 520, cell=90, seed=5)


def _job(scene: FieldScene, out: Path, **compute: Any) -> dict[str, Any]:
    return {
        "inputs": {"bands": {"red": {"path": str(scene.red)}, "nir": {"path": str(scene.nir)}}, "scale": 0.0001},
        "tiling": {"tile_size": 64, "halo": 8},
        "models": [{"type": "crop_health", "name": "crop_health", "indices": ["ndvi"]}],
        "output": {"path": str(out), "quicklook": False},
        "compute": {"num_cpus": 2, "object_store_mb": 128, **compute},
    }


def _pipeline(gpkg: Path) -> str:
    job = pyogrio.read_dataframe(gpkg, layer="job")
    return dict(zip(job["key"], job["value"], strict=True))["pipeline"]


@pytest.fixture(scope="module")
def split_run(scene, tmp_path_factory) -> Path:
    """The reference: the split pipeline (CPU model actors: a GPU share was asked for and there is none)."""
    out = tmp_path_factory.mktemp("split") / "split.gpkg"
    run_job(parse_spec(_job(scene, out, gpus_per_actor=0.5)), progress=False)
    assert _pipeline(out) == "model actors"
    return out


def test_tile_workers_give_the_split_pipelines_outputs(tmp_path, scene, split_run):
    out = tmp_path / "fused.gpkg"
    result = run_job(parse_spec(_job(scene, out)), progress=False)
    assert result.tiles_failed == 0 and _pipeline(out) == "tile workers"
    assert_same_outputs(out, split_run, layer="crop_health", tiles=TILES)
    job = pyogrio.read_dataframe(out, layer="job").set_index("key")["value"]
    assert float(job["seconds_tiles"]) > 0 and float(job["seconds_actors_start"]) > 0


def test_tile_workers_resume_only_missing_tiles(tmp_path, scene, split_run):
    out = tmp_path / "f.gpkg"
    spec = parse_spec(_job(scene, out))
    run_job(spec, progress=False)
    for tile_id in ("r0001_c0001", "r0003_c0004"):
        tile_path(tmp_path / "f.work", tile_id).unlink()
    second = run_job(spec, overwrite=True, resume=True, progress=False)
    assert second.tiles_resumed == TILES - 2
    tiles = gpd.read_file(out, layer="tiles").set_index("tile_id")
    assert tiles.loc["r0001_c0001", "status"] == "done" and tiles.loc["r0000_c0000", "status"] == "resumed"
    assert_same_outputs(out, split_run, layer="crop_health", tiles=TILES)


def test_tile_workers_retry_then_report_failing_tiles(tmp_path, scene):
    """Corrupt pixels in the NIR band: its tiles fail after their retries, the others finish, the index says so."""
    raw = _job(scene, tmp_path / "f.gpkg", max_retries=1)
    raw["inputs"]["bands"] = corrupt_nir_bands(scene.red, scene.nir, tmp_path / "scene")
    with pytest.raises(TileFailedError, match="tiles failed"):
        run_job(parse_spec(raw), progress=False)
    tiles = gpd.read_file(tmp_path / "f.gpkg", layer="tiles")
    failed = tiles[tiles["status"] == "failed"]
    assert 0 < len(failed) < len(tiles)
    assert (failed["attempts"] == 2).all() and failed["error"].str.contains("cannot read").all()


def test_killed_tile_worker_restarts_and_every_tile_is_done_once(tmp_path, scene, split_run):
    out = tmp_path / "killed.gpkg"
    killed: list[int] = []
    saved_at_kill: list[int] = []

    def killer() -> None:
        wait_for_tiles(tmp_path / "killed.work", 6)
        killed.extend(kill_model_actors(name="TileWorker", limit=1))
        saved_at_kill.append(saved_tiles(tmp_path / "killed.work"))

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    result = run_job(parse_spec(_job(scene, out)), progress=False)
    thread.join(timeout=60)
    assert len(killed) == 1 and saved_at_kill[0] < TILES, "no tile worker was killed mid-job"
    assert result.tiles_failed == 0
    assert_same_outputs(out, split_run, layer="crop_health", tiles=TILES)


def test_strip_order_takes_turns_between_strips():
    grid = TileGrid(500, 200, 100, 4)  # 2 rows x 5 columns; strips of columns {0, 1, 2} and {3, 4}
    order = [(t.row, t.col) for t in strip_order(list(grid), 2, grid.shape[1])]
    assert order == [(0, 0), (0, 3), (0, 1), (0, 4), (0, 2), (1, 0), (1, 3), (1, 1), (1, 4), (1, 2)]


def test_class_raster_is_the_thresholded_ndvi(tmp_path, scene):
    """Tile workers classify every pixel as crop_health's thresholds say (smoothing off)."""
    raw = _job(scene, tmp_path / "c.gpkg")
    raw["models"][0]["smoothing_px"] = 0
    run_job(parse_spec(raw), progress=False)
    with rasterio.open(scene.red) as r, rasterio.open(scene.nir) as n:
        red, nir = r.read(1).astype(np.float32) * np.float32(1e-4), n.read(1).astype(np.float32) * np.float32(1e-4)
    ndvi = (nir - red) / (nir + red)
    expected = np.digitize(ndvi, np.array([0.25, 0.45, 0.65], np.float32)) + 1
    with rasterio.open(tmp_path / "c_crop_health.tif") as cog:
        np.testing.assert_array_equal(cog.read(1), expected)
