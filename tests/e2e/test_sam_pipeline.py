"""SAM through the whole pipeline on a real local Ray, with a tiny randomly initialised checkpoint.

The weights are random (no real checkpoint can be downloaded here), so masks are arbitrary: these tests check that
SAM's outputs flow through tiling, batched actors, stitching and export intact — one object per prompt carrying its
attributes, no overlaps, ids consistent between the GeoPackage and the id raster.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely

from geoseg.pipeline import run_job
from geoseg.run.session import shutdown_ray
from geoseg.spec.job import parse_spec
from geoseg.spec.models import FieldDelineatorSpec
from geoseg.testutils.tiny_sam import TINY_VARIANT, register_tiny_sam, write_tiny_checkpoint

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "jobs" / "sample"


@pytest.fixture(scope="module")
def ray_with_tiny_sam():
    """Ray whose workers know the tiny variant (registered at runtime, like a user's custom variant)."""
    import ray

    if ray.is_initialized():
        shutdown_ray()
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
    shutdown_ray()


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


def _refine_job(tmp_path: Path, checkpoint: Path) -> dict:
    """The field delineator proposes fields; the tiny SAM refines each from its box, in one job."""
    job = _job(tmp_path, checkpoint, mode="prompted", prompts_from="fields", name="refined")
    job["inputs"]["bands"] |= {
        name: {"path": str(SAMPLE / f"{file}.tif")} for name, file in (("nir", "B08"), ("swir16", "B11"))
    }
    job["tiling"]["halo"] = FieldDelineatorSpec(type="field_delineator").receptive_field
    job["models"].insert(0, {"type": "field_delineator", "name": "fields"})
    job["output"]["min_area_m2"] = 20000  # the larger fields only: fewer prompts for the CPU
    return job


@pytest.fixture(scope="module")
def refined_run(tmp_path_factory, checkpoint, ray_with_tiny_sam) -> Path:
    """One delineator + SAM refine job; its folder (GeoPackage and work dir)."""
    folder = tmp_path_factory.mktemp("refine")
    run_job(parse_spec(_refine_job(folder, checkpoint)), progress=False)
    return folder


def test_sam_refines_the_delineators_fields_in_one_job(refined_run):
    """Each kept field prompts SAM once with its box; fragments of one field's prompt merge into one object."""
    tmp_path = refined_run
    fields = gpd.read_file(tmp_path / "sam.gpkg", layer="fields")
    refined = gpd.read_file(tmp_path / "sam.gpkg", layer="refined")
    assert len(fields) > 5 and 0 < len(refined) <= len(fields)
    assert refined["prompt_id"].is_unique and (refined["prompt_source"] == "fields").all()
    assert set(refined["prompt_id"].astype(int)) <= set(fields["id"])
    union = shapely.union_all(refined.geometry.values)
    assert union.area == pytest.approx(refined.geometry.area.sum(), rel=1e-6)  # no overlaps after stitching
    for row in refined.itertuples():  # random weights: the mask is arbitrary, but it stays near its prompt's box
        field = fields.loc[fields["id"] == int(row.prompt_id)].geometry.iloc[0]
        assert row.geometry.intersects(shapely.box(*field.bounds).buffer(200))


def _drop_layer(tile_file: Path, layer: str) -> None:
    """Rewrite a saved tile without one layer, as if the pass that adds it had not reached the tile."""
    with np.load(tile_file, allow_pickle=False) as data:
        arrays = {
            k: data[k] for k in data.files if k != "doc" and f".{layer}." not in k and not k.endswith(f".{layer}")
        }
        doc = json.loads(str(data["doc"]))
    doc["layers"].pop(layer)
    np.savez(tile_file, doc=np.array(json.dumps(doc)), **arrays)


def test_refine_pass_resumes_without_redoing_the_first(refined_run, checkpoint):
    """Tiles saved with the first pass's layers only (an interrupted second pass) get just the refined layer."""
    tmp_path = refined_run
    spec = parse_spec(_refine_job(tmp_path, checkpoint))
    expected = gpd.read_file(tmp_path / "sam.gpkg", layer="refined")
    tile_files = sorted((tmp_path / "sam.work" / "tiles").glob("*.npz"))
    stripped = [f for f in tile_files if "refined" in json.loads(str(np.load(f)["doc"]))["layers"]][:2]
    assert stripped, "some tiles hold a refined layer"
    for tile_file in stripped:
        _drop_layer(tile_file, "refined")
    result = run_job(spec, resume=True, overwrite=True, progress=False)
    assert result.tiles_resumed == result.tiles_done  # the first pass did not run again
    again = gpd.read_file(tmp_path / "sam.gpkg", layer="refined")
    assert sorted(again["prompt_id"]) == sorted(expected["prompt_id"])
    assert shapely.union_all(again.geometry.values).equals(shapely.union_all(expected.geometry.values))


def test_corrupt_checkpoint_fails_fast_with_one_line(tmp_path, ray_with_tiny_sam):
    """A checkpoint that exists but is corrupt fails when the actor loads it: one clear error, no tile churn."""
    from geoseg.errors import GeosegError

    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(GeosegError, match=r"model actor failed to start: WeightsError: .*broken\.pth"):
        run_job(parse_spec(_job(tmp_path, bad)), progress=False)
    assert not (tmp_path / "sam.gpkg").exists()
