"""Tests of the U-Net model, its checkpoint format, training and ``geoseg train``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
import yaml
from rasterio.windows import Window

from geoseg.cli import main
from geoseg.errors import OutputExistsError, SpecError, WeightsError
from geoseg.inputs.scene import open_scene, read_window
from geoseg.inputs.tiles import TileGrid
from geoseg.models import ModelInfo, build_model, model_info
from geoseg.models.base import SceneInfo, SemanticOutput, TileContext
from geoseg.models.unet.meta import UNetSidecar, read_unet_metadata, sidecar_path
from geoseg.models.unet.model import UNet, UNetModel, load_unet, save_unet
from geoseg.plan.job import model_infos
from geoseg.spec.job import UNetSpec, load_spec, parse_spec
from geoseg.testutils.rasters import utm_transform, write_raster
from geoseg.train import TrainingResult, open_labels, train_unet

SIZE = 160
BLOCK = 16
THRESHOLDS = (0.3, 0.6)  # NDVI: class 1 below 0.3, class 2 up to 0.6, class 3 above
NAMES = ["bare", "sparse", "dense"]


# --------------------------------------------------------------------------------------------- fixtures
def _synthetic(folder: Path, seed: int = 0) -> dict[str, Any]:
    """A 3-band scene of 16 px fields and labels = NDVI classes of the pixels (0 in a corner: unlabelled).

    Each field has its own brightness and an NDVI inside one class's range, plus pixel noise; a strip of band
    nodata crosses the scene. Returns the spec mapping (paths relative to ``folder``).
    """
    rng = np.random.default_rng(seed)
    blocks = SIZE // BLOCK
    centre = rng.choice([0.12, 0.45, 0.8], size=(blocks, blocks))
    brightness = rng.uniform(0.03, 0.12, size=(blocks, blocks))
    up = np.ones((BLOCK, BLOCK))
    ndvi = np.kron(centre, up) + rng.normal(0, 0.03, (SIZE, SIZE))
    red = np.kron(brightness, up) * rng.uniform(0.95, 1.05, (SIZE, SIZE))
    nir = red * (1 + ndvi) / (1 - ndvi)
    green = rng.uniform(0.02, 0.2, (SIZE, SIZE))  # a distractor
    nodata = np.zeros((SIZE, SIZE), bool)
    nodata[:, 70:73] = True
    labels = (np.digitize((nir - red) / (nir + red), THRESHOLDS) + 1).astype(np.uint8)
    labels[:20, :20] = 0
    labels[nodata] = 0
    for name, band in (("red", red), ("nir", nir), ("green", green)):
        dn = np.clip(band * 10000, 1, 65535).astype(np.uint16)
        dn[nodata] = 0
        write_raster(folder / f"{name}.tif", dn, nodata=0)
    write_raster(folder / "labels.tif", labels, nodata=0)
    return {
        "name": "synthetic",
        "inputs": {"bands": {n: {"path": f"{n}.tif"} for n in ("red", "nir", "green")}, "nodata": 0, "scale": 1e-4},
        "models": [{"type": "crop_health"}],
        "output": {"path": "out/result.gpkg"},
    }


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("unet_scene")
    raw = _synthetic(folder)
    (folder / "job.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def trained(scene_dir: Path) -> tuple[Path, TrainingResult]:
    """A U-Net trained for a few dozen steps on the synthetic scene (seconds on 2 CPU cores)."""
    out = scene_dir / "models" / "unet.pt"
    metrics = train_unet(
        load_spec(scene_dir / "job.yaml"), scene_dir / "labels.tif", out, classes=NAMES, epochs=3,
        steps_per_epoch=12, patch_size=64, batch_size=6, lr=1e-2, depth=2, width=8, seed=1,
    )  # fmt: skip
    return out, metrics


def _scene_info(bands: tuple[str, ...] = ("red", "nir", "green")) -> SceneInfo:
    return SceneInfo(bands, "EPSG:32633", (10.0, 10.0), 100.0)


def _contexts(n: int, size: tuple[int, int]) -> list[TileContext]:
    grid = TileGrid(size[1], size[0], 32, 1)
    return [TileContext(next(iter(grid)), utm_transform()) for _ in range(n)]


def _one_line_weights_error(call: Any) -> str:
    with pytest.raises(WeightsError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    return message


# --------------------------------------------------------------------------------------------- (a) training
def test_training_learns_ndvi_classes(trained):
    _, metrics = trained
    assert metrics.val_accuracy is not None and metrics.val_accuracy >= 0.9, metrics
    assert metrics.val_pixels > 1000
    assert metrics.loss_history[-1] < metrics.loss_history[0]
    assert set(metrics.val_class_accuracy) == set(NAMES)


def test_trained_model_classifies_the_whole_scene(trained, scene_dir):
    path, _ = trained
    scene = open_scene(load_spec(scene_dir / "job.yaml").inputs)
    pixels, valid = read_window(scene, Window(0, 0, SIZE, SIZE), ("red", "nir", "green"))
    (out,) = UNetModel(path).predict(pixels[None], valid[None], _contexts(1, (SIZE, SIZE)))
    with rasterio.open(scene_dir / "labels.tif") as src:
        truth = src.read(1)
    keep = truth > 0
    assert (out.classes[keep] == truth[keep]).mean() >= 0.9


# --------------------------------------------------------------------------------------------- (b) checkpoints
def test_checkpoint_loads_with_weights_only_and_sidecar_holds_the_metadata(trained):
    path, _ = trained
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["config"] == {"in_channels": 3, "n_classes": 3, "depth": 2, "width": 8}
    assert all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())
    meta = json.loads(sidecar_path(path).read_text())
    assert sidecar_path(path) == path.with_name("unet.json")
    assert meta["bands"] == ["red", "nir", "green"]
    assert [c["name"] for c in meta["classes"]] == NAMES and [c["value"] for c in meta["classes"]] == [1, 2, 3]
    assert all(len(c["color"]) == 4 for c in meta["classes"])
    assert len(meta["mean"]) == len(meta["std"]) == 3 and all(s > 0 for s in meta["std"])
    assert meta["depth"] == 2 and meta["width"] == 8 and meta["receptive_field"] == 8
    assert read_unet_metadata(path) == UNetSidecar.model_validate(meta)


def test_predictions_identical_after_save_and_reload(trained, tmp_path):
    path, _ = trained
    net, meta = load_unet(path)
    copy = save_unet(tmp_path / "copy.pt", net, meta)
    rng = np.random.default_rng(3)
    pixels = rng.uniform(0, 0.5, (2, 3, 40, 40)).astype(np.float32)
    valid = np.ones((2, 40, 40), bool)
    first = UNetModel(path).predict(pixels, valid, _contexts(2, (40, 40)))
    second = UNetModel(copy).predict(pixels, valid, _contexts(2, (40, 40)))
    for a, b in zip(first, second, strict=True):
        assert isinstance(a, SemanticOutput) and isinstance(b, SemanticOutput)
        np.testing.assert_array_equal(a.classes, b.classes)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_save_refuses_to_overwrite(trained, tmp_path):
    net, meta = load_unet(trained[0])
    save_unet(tmp_path / "a.pt", net, meta)
    with pytest.raises(OutputExistsError):
        save_unet(tmp_path / "a.pt", net, meta)
    save_unet(tmp_path / "a.pt", net, meta, overwrite=True)
    assert not list(tmp_path.glob("*.tmp"))


def test_model_info_and_registry(trained, tmp_path):
    path, _ = trained
    spec = UNetSpec(type="unet", name="cover", checkpoint=str(path), merge="mean")
    info = model_info(spec)
    rf = read_unet_metadata(path).receptive_field
    expected = ModelInfo("cover", "semantic", ("red", "nir", "green"), info.classes, merge="mean", receptive_field=rf)
    assert info == expected
    assert [c.name for c in info.classes] == NAMES
    model = build_model(spec, _scene_info(), "cpu")
    assert isinstance(model, UNetModel) and model.name == "cover" and model.classes == info.classes


# --------------------------------------------------------------------------------------------- (c) errors
def test_missing_checkpoint_and_sidecar(trained, tmp_path):
    assert "not found" in _one_line_weights_error(lambda: load_unet(tmp_path / "none.pt"))
    shutil.copy(trained[0], tmp_path / "alone.pt")
    message = _one_line_weights_error(lambda: UNetModel(tmp_path / "alone.pt"))
    assert "alone.json" in message and "not found" in message
    shutil.copy(sidecar_path(trained[0]), tmp_path / "orphan.json")
    assert "orphan.pt not found" in _one_line_weights_error(lambda: load_unet(tmp_path / "orphan.pt"))


def test_corrupt_and_truncated_checkpoints(trained, tmp_path):
    data = trained[0].read_bytes()
    for name, body in (("garbage", b"not a checkpoint at all"), ("truncated", data[: len(data) // 2])):
        (tmp_path / f"{name}.pt").write_bytes(body)
        shutil.copy(sidecar_path(trained[0]), tmp_path / f"{name}.json")
        assert "corrupt" in _one_line_weights_error(lambda n=name: load_unet(tmp_path / f"{n}.pt"))
    (tmp_path / "bad.json").write_text("{not json")
    shutil.copy(trained[0], tmp_path / "bad.pt")
    assert "not readable JSON" in _one_line_weights_error(lambda: read_unet_metadata(tmp_path / "bad.pt"))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"bands": []}, "bands"),
        ({"std": [1.0, 0.0, 1.0]}, "std must be positive"),
        ({"mean": [0.1]}, "mean must hold one number per band (3)"),
        ({"classes": [{"value": 2, "name": "x"}]}, "class 1 must be"),
    ],
)
def test_invalid_sidecar_says_what_is_wrong(trained, tmp_path, change, expected):
    meta = json.loads(sidecar_path(trained[0]).read_text())
    (tmp_path / "m.json").write_text(json.dumps({**meta, **change}))
    message = _one_line_weights_error(lambda: read_unet_metadata(tmp_path / "m.json"))
    assert "is invalid" in message and expected in message


def test_state_dict_not_matching_its_config(trained, tmp_path):
    shutil.copy(trained[0], tmp_path / "m.pt")
    meta = json.loads(sidecar_path(trained[0]).read_text())
    (tmp_path / "m.json").write_text(json.dumps({**meta, "width": 16}))
    assert "does not match its sidecar" in _one_line_weights_error(lambda: load_unet(tmp_path / "m.pt"))
    payload = torch.load(trained[0], weights_only=True)
    payload["config"]["width"] = 16
    torch.save(payload, tmp_path / "m.pt")
    assert "state_dict does not match" in _one_line_weights_error(lambda: load_unet(tmp_path / "m.pt"))


def test_bands_missing_from_the_job(trained):
    spec = UNetSpec(type="unet", checkpoint=str(trained[0]))
    message = _one_line_weights_error(lambda: build_model(spec, _scene_info(("red", "nir")), "cpu"))
    assert "green" in message


# --------------------------------------------------------------------------------------------- (d) predict
@pytest.mark.parametrize("shape", [(37, 53), (64, 64), (1, 9)])
def test_unet_forward_keeps_any_size(shape):
    net = UNet(2, 5, depth=3, width=4).eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 2, *shape)).shape == (2, 5, *shape)


def test_predict_shapes_scores_and_invalid_pixels(trained):
    model = UNetModel(trained[0])
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 0.5, (3, 3, 37, 53)).astype(np.float32)
    valid = rng.random((3, 37, 53)) > 0.2
    valid[1] = False
    outputs = model.predict(pixels, valid, _contexts(3, (37, 53)))
    assert len(outputs) == 3
    for out, ok in zip(outputs, valid, strict=True):
        assert isinstance(out, SemanticOutput) and out.scores is not None
        assert out.classes.shape == (37, 53) and out.classes.dtype == np.uint8
        assert out.scores.shape == (3, 37, 53) and out.scores.dtype == np.float16
        np.testing.assert_allclose(out.scores.astype(np.float32).sum(axis=0)[ok], 1.0, atol=5e-3)
        assert (out.scores[:, ~ok] == 0).all() and (out.classes[~ok] == 0).all()
        assert set(np.unique(out.classes[ok])) <= {1, 2, 3}
        np.testing.assert_array_equal(out.classes[ok], out.scores.argmax(axis=0)[ok] + 1)


# --------------------------------------------------------------------------------------------- (e) spec
def _unet_raw(**model: Any) -> dict[str, Any]:
    return {
        "inputs": {"bands": {name: {"path": f"{name}.tif"} for name in ("red", "nir", "green")}},
        "tiling": {"tile_size": 256, "halo": 16},
        "models": [{"type": "unet", "checkpoint": "models/unet.pt", **model}],
        "output": {"path": "out/result.gpkg"},
    }


def test_unet_spec_validates_with_defaults(tmp_path):
    spec = parse_spec(_unet_raw(), tmp_path)
    (model,) = spec.models
    assert isinstance(model, UNetSpec)
    assert model.name == "landcover" and model.merge == "linear"
    assert model.checkpoint == str(tmp_path / "models" / "unet.pt")
    assert not hasattr(model, "receptive_field")  # read from the sidecar by the plan, never by the spec


def test_unet_spec_validates_without_its_checkpoint_and_the_plan_names_it(tmp_path):
    spec = parse_spec(_unet_raw(), tmp_path)  # validating a spec reads no file
    with pytest.raises(WeightsError, match="geoseg train"):
        model_infos(spec)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"chekpoint": "x.pt"}, "models.0.unet.chekpoint: unknown key"),
        ({"merge": "max"}, "merge"),
        ({"checkpoint": None}, "checkpoint"),
    ],
)
def test_unet_spec_rejects_mistakes(tmp_path, model, expected):
    raw = _unet_raw(**model)
    with pytest.raises(SpecError) as info:
        parse_spec(raw, tmp_path, "job.yaml")
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_unet_spec_requires_a_checkpoint(tmp_path):
    raw = _unet_raw()
    del raw["models"][0]["checkpoint"]
    with pytest.raises(SpecError, match="checkpoint"):
        parse_spec(raw, tmp_path)


def test_halo_is_checked_against_the_sidecar(trained, tmp_path):
    meta = json.loads(sidecar_path(trained[0]).read_text())
    (tmp_path / "models").mkdir()
    shutil.copy(trained[0], tmp_path / "models" / "unet.pt")
    (tmp_path / "models" / "unet.json").write_text(json.dumps({**meta, "receptive_field": 48}))
    spec = parse_spec(_unet_raw(), tmp_path)  # the spec alone cannot tell: the plan checks
    with pytest.raises(SpecError, match=r"raise tiling\.halo to at least 48"):
        model_infos(spec)
    raw = _unet_raw()
    raw["tiling"]["halo"] = 48
    (info,) = model_infos(parse_spec(raw, tmp_path))
    assert info.receptive_field == 48


# --------------------------------------------------------------------------------------------- (f) CLI
def test_cli_train_end_to_end(scene_dir, tmp_path, capsys):
    out = tmp_path / "cli" / "unet.pt"
    args = ["train", str(scene_dir / "job.yaml"), "--labels", str(scene_dir / "labels.tif"), "--out", str(out),
            "--epochs", "1", "--steps", "2", "--patch-size", "32", "--batch-size", "2", "--depth", "1",
            "--width", "4", "--class-names", ",".join(NAMES), "--bands", "red,nir"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr()
    metrics = json.loads(printed.out)  # the bar goes to stderr: stdout stays JSON
    assert metrics["checkpoint"] == str(out) and 0 <= metrics["val_accuracy"] <= 1
    assert "epoch 1/1" in printed.err and "2/2" in printed.err and f"loss {metrics['train_loss']:.4f}" in printed.err
    assert read_unet_metadata(out).bands == ["red", "nir"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "--overwrite" in err and err.count("\n") == 1
    assert main([*args, "--overwrite"]) == 0


def test_cli_train_rejects_too_many_labels(scene_dir, tmp_path, capsys):
    args = ["train", str(scene_dir / "job.yaml"), "--labels", str(scene_dir / "labels.tif"),
            "--out", str(tmp_path / "u.pt"), "--class-names", "a,b"]  # fmt: skip
    assert main(args) == 2
    assert "value 3" in capsys.readouterr().err
    assert not (tmp_path / "u.pt").exists()


def test_labels_on_another_grid_are_read_with_nearest_resampling(scene_dir, tmp_path):
    with rasterio.open(scene_dir / "labels.tif") as src:
        truth = src.read(1)
    fine = np.kron(truth[:80, :80], np.ones((2, 2), np.uint8))  # 5 m pixels, no nodata value: 0 = unlabelled
    write_raster(tmp_path / "fine.tif", fine, transform=utm_transform(5.0))
    labels = open_labels(tmp_path / "fine.tif", open_scene(load_spec(scene_dir / "job.yaml").inputs))
    window = labels.read(Window(60, 60, 40, 40))
    np.testing.assert_array_equal(window[:20, :20], truth[60:80, 60:80])
    assert (window[20:] == 0).all() and (window[:, 20:] == 0).all()  # outside the label raster: ignored
