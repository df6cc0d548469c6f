"""SAM through the whole pipeline on a real local Ray, with a tiny randomly initialised checkpoint.

The weights are random (no real checkpoint can be downloaded here), so masks are arbitrary: these tests check that
SAM's outputs flow through tiling, batched actors, stitching and export intact — one object per prompt carrying its
attributes, no overlaps, ids consistent between the GeoPackage and the id raster.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely

from geoseg.runner import run_job
from geoseg.spec import parse_spec
from geoseg.testutils.tiny_sam import TINY_VARIANT, register_tiny_sam, write_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "jobs" / "sample"


@pytest.fixture(scope="module")
def ray_with_tiny_sam():
    """Ray whose workers know the tiny variant (registered at runtime, like a user's custom variant)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    register_tiny_sam()
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=256 * 2**20,
        log_to_driver=False,
        runtime_env={"worker_process_setup_hook": "geoseg.testutils.tiny_sam.register_tiny_sam"},
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("sam") / "vit_tiny.pth")


def _job(tmp_path: Path, checkpoint: Path, **sam: object) -> dict:
    bands = {
        name: {"path": str(SAMPLE / f"{file}.tif")}
        for name, file in (("red", "B04"), ("green", "B03"), ("blue", "B02"))
    }
    model = {"type": "sam", "name": "objects", "variant": TINY_VARIANT, "checkpoint": str(checkpoint), **sam}
    return {
        "inputs": {"bands": bands, "nodata": 0, "scale": 0.0001},
        "tiling": {"tile_size": 256, "halo": 16},
        "models": [model],
        "output": {"path": str(tmp_path / "sam.gpkg")},
        "compute": {"batch_size": 3},
    }


def test_sam_automatic_through_ray(tmp_path, checkpoint, ray_with_tiny_sam):
    spec = parse_spec(_job(tmp_path, checkpoint, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0))
    result = run_job(spec, progress=False)
    assert result.tiles_failed == 0
    objects = gpd.read_file(tmp_path / "sam.gpkg", layer="objects")
    assert len(objects) > 0 and objects.crs.to_epsg() == 32618
    assert objects["id"].is_unique and objects["score"].between(0, 1.5).all()
    union = shapely.union_all(objects.geometry.values)
    assert union.area == pytest.approx(objects.geometry.area.sum(), rel=1e-6)  # no overlaps after stitching
    with rasterio.open(tmp_path / "sam_objects.tif") as src:
        ids = src.read(1)
    assert set(np.unique(ids)) - {0} == set(objects["id"])


def test_sam_prompted_by_points_in_wgs84(tmp_path, checkpoint, ray_with_tiny_sam):
    """Prompts in EPSG:4326 on a UTM scene: one object per prompt, whole across tiles, with its attributes."""
    points = gpd.read_file(SAMPLE / "field_points.geojson")
    spec = parse_spec(_job(tmp_path, checkpoint, mode="prompted", prompts=str(SAMPLE / "field_points.geojson")))
    run_job(spec, progress=False)
    objects = gpd.read_file(tmp_path / "sam.gpkg", layer="objects")
    assert 0 < len(objects) <= len(points)
    assert objects["prompt_id"].is_unique  # fragments of one prompt from several tiles merged into one object
    names = dict(zip(points["id"].astype(str), points["name"], strict=True))
    for row in objects.itertuples():
        assert names[str(row.prompt_id)] == row.prompt_name


def test_corrupt_checkpoint_fails_fast_with_one_line(tmp_path, ray_with_tiny_sam):
    """A checkpoint that exists but is corrupt fails when the actor loads it: one clear error, no tile churn."""
    from geoseg.errors import GeosegError

    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(GeosegError, match=r"model actor failed to start: WeightsError: .*broken\.pth"):
        run_job(parse_spec(_job(tmp_path, bad)), progress=False)
    assert not (tmp_path / "sam.gpkg").exists()
