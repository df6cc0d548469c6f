"""A blended semantic layer (U-Net, merge: linear / mean) through the whole pipeline on a real local Ray."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely

from geoseg.pipeline import run_job
from geoseg.run.workdir import scores_path, tile_path
from geoseg.spec.job import parse_spec
from geoseg.testutils.scenes import write_field_scene
from geoseg.train import train_unet

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def scene_and_model(tmp_path_factory):
    """A field scene, its true field mask as labels (1 bare, 2 field), a U-Net trained on it for seconds."""
    folder = tmp_path_factory.mktemp("blend")
    scene = write_field_scene(folder / "scene", 600, 500, cell=120, seed=2)
    with rasterio.open(scene.nir) as src:
        labels = np.where(src.read(1) > 3500, 2, 1).astype(np.uint8)
        profile = src.profile | {"dtype": "uint8", "nodata": 0}
    with rasterio.open(folder / "labels.tif", "w", **profile) as dst:
        dst.write(labels, 1)
    raw = _job(scene, folder / "unused.gpkg", folder / "none.pt", "core")
    raw["models"] = [{"type": "crop_health"}]
    model = folder / "unet.pt"
    train_unet(parse_spec(raw), str(folder / "labels.tif"), model, classes=["bare", "field"], epochs=2,
               steps_per_epoch=10, patch_size=64, batch_size=6, lr=1e-2, depth=2, width=8, seed=0)  # fmt: skip
    return scene, model, labels


def _job(scene, output, checkpoint, merge: str) -> dict:
    return {
        "inputs": {"bands": {"red": {"path": str(scene.red)}, "nir": {"path": str(scene.nir)}}, "scale": 0.0001},
        "tiling": {"tile_size": 128, "halo": 16},
        "models": [{"type": "unet", "name": "cover", "checkpoint": str(checkpoint), "merge": merge}],
        "output": {"path": str(output)},
    }


@pytest.mark.parametrize("merge", ["linear", "mean", "core"])
def test_blended_layer_covers_the_scene_once(tmp_path, scene_and_model, merge):
    scene, model, labels = scene_and_model
    result = run_job(parse_spec(_job(scene, tmp_path / "o.gpkg", model, merge)), progress=False)
    assert result.tiles_failed == 0
    zones = gpd.read_file(tmp_path / "o.gpkg", layer="cover")
    assert set(zones["class_name"]) == {"bare", "field"}
    assert zones["pixels"].sum() == scene.width * scene.height  # every pixel in exactly one zone
    assert shapely.union_all(zones.geometry.values).area == pytest.approx(zones.geometry.area.sum())
    with rasterio.open(tmp_path / "o_cover.tif") as src:
        classes = src.read(1)
    assert (classes == labels).mean() > 0.97  # an easy task, learnt in seconds
    assert scores_path(tmp_path / "o.work", "cover", "r0000_c0000").exists() == (merge != "core")


def test_blend_pass_resumes(tmp_path, scene_and_model):
    scene, model, _ = scene_and_model
    spec = parse_spec(_job(scene, tmp_path / "o.gpkg", model, "linear"))
    run_job(spec, progress=False)
    before = gpd.read_file(tmp_path / "o.gpkg", layer="cover")
    tile_path(tmp_path / "o.work", "r0001_c0002").unlink()
    second = run_job(spec, overwrite=True, resume=True, progress=False)
    assert second.tiles_resumed == second.tiles_done - 1
    after = gpd.read_file(tmp_path / "o.gpkg", layer="cover")
    assert len(after) == len(before)
    for name in ("bare", "field"):
        a = shapely.union_all(after[after["class_name"] == name].geometry.values)
        b = shapely.union_all(before[before["class_name"] == name].geometry.values)
        assert a.symmetric_difference(b).area == pytest.approx(0.0)


def test_blend_pass_retries_failed_tiles(tmp_path, scene_and_model, monkeypatch):
    """Two tiles fail their first blend (injected, inside the Ray task): retried like the model pass, the layer is
    the same as without failures; with no retries left they are reported failed."""
    from geoseg.errors import TileFailedError
    from geoseg.run import actors as runner
    from geoseg.testutils.faults import fail_once

    scene, model, _ = scene_and_model
    clean = run_job(parse_spec(_job(scene, tmp_path / "clean.gpkg", model, "linear")), progress=False)
    flaky_ids = {"r0001_c0002", "r0003_c0000"}
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setattr(runner, "blend_tile", fail_once(runner.blend_tile, str(markers), flaky_ids))
    result = run_job(parse_spec(_job(scene, tmp_path / "o.gpkg", model, "linear")), progress=False)
    assert {p.stem for p in markers.iterdir()} == flaky_ids  # they did fail once
    assert result.tiles_failed == 0 and result.outputs.layers == clean.outputs.layers
    got, want = gpd.read_file(tmp_path / "o.gpkg", layer="cover"), gpd.read_file(tmp_path / "clean.gpkg", layer="cover")
    assert shapely.union_all(got.geometry.values).equals(shapely.union_all(want.geometry.values))

    for marker in markers.iterdir():
        marker.unlink()
    raw = _job(scene, tmp_path / "f.gpkg", model, "linear") | {"compute": {"max_retries": 0}}
    with pytest.raises(TileFailedError, match=r"2 of .* tiles failed .*injected failure"):
        run_job(parse_spec(raw), progress=False)
    tiles = gpd.read_file(tmp_path / "f.gpkg", layer="tiles").set_index("tile_id")
    assert set(tiles.index[tiles["status"] == "failed"]) == flaky_ids
