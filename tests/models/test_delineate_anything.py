"""The ``delineate_anything`` model type: the published YOLO11-seg architectures from ultralytics' own yaml, a
checkpoint in ultralytics' format loaded with ``weights_only=True``, instances with scores.

Skipped where the optional extra (ultralytics, AGPL-3.0) is absent. No real weights can be downloaded here: the
networks are randomly initialised, so the tests check structure and loading, not field quality.
"""

from __future__ import annotations

import hashlib
import os
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from geoseg.errors import WeightsError
from geoseg.models import checkpoints, model_info
from geoseg.models.base import InstanceOutput
from geoseg.models.checkpoints import Checkpoint, resolve_family
from geoseg.models.delineate_anything.model import DelineateAnythingModel, paint
from geoseg.models.delineate_anything.variants import DA_CHECKPOINTS, VARIANTS
from geoseg.spec.models import DelineateAnythingSpec

pytest.importorskip("ultralytics", reason="the delineate-anything extra is not installed")

from geoseg.models.delineate_anything.network import build_da_net, load_da_net

# TorchGeo torchgeo/models/yolo.py YOLO_Weights meta: 'model' and 'num_classes' of each file
PUBLISHED = {"DelineateAnything-S": ("yolo11n-seg", 1), "DelineateAnything": ("yolo11x-seg", 1)}


def _publisher_net(model: str, classes: int) -> torch.nn.Module:
    """The architecture as ultralytics defines it: its packaged yaml, the scale picked by the name, nc set."""
    from ultralytics.nn.tasks import SegmentationModel
    from ultralytics.utils import ROOT

    cfg = yaml.safe_load((ROOT / "cfg" / "models" / "11" / "yolo11-seg.yaml").read_text())
    cfg.update(nc=classes, scale=model[len("yolo11")])
    return SegmentationModel(cfg, verbose=False)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_has_the_publishers_keys_and_shapes(name: str) -> None:
    ours = {k: tuple(v.shape) for k, v in build_da_net(VARIANTS[name]).state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in _publisher_net(*PUBLISHED[name]).state_dict().items()}
    assert ours == theirs


def test_ultralytics_stays_offline() -> None:
    build_da_net(VARIANTS["DelineateAnything-S"])
    assert os.environ["YOLO_OFFLINE"] == "1"
    assert {e.family for e in DA_CHECKPOINTS} == {"delineate_anything"}
    assert all(e.license == "AGPL-3.0" and e.filename.rsplit("-", 1)[1].startswith(e.sha256) for e in DA_CHECKPOINTS)


def _ultralytics_checkpoint(path: Path, net: torch.nn.Module) -> Path:
    """What ultralytics' trainer saves: the model pickled whole, in half precision, beside training records."""
    torch.save(
        {
            "date": "2025-03-01T00:00:00",
            "version": "8.3.0",
            "license": "AGPL-3.0 License (https://ultralytics.com/license)",
            "epoch": -1,
            "best_fitness": None,
            "model": deepcopy(net).half(),
            "ema": None,
            "updates": None,
            "optimizer": None,
            "train_args": {"task": "segment", "imgsz": 512, "epochs": 100},
            "train_metrics": {"metrics/mAP50(M)": 0.5},
        },
        path,
    )
    return path


def test_an_ultralytics_checkpoint_loads_safely_through_the_registry(tmp_path: Path, monkeypatch) -> None:
    variant = VARIANTS["DelineateAnything-S"]
    torch.manual_seed(0)
    net = build_da_net(variant)
    cache = tmp_path / "cache"
    cache.mkdir()
    path = _ultralytics_checkpoint(cache / "da-s.pt", net)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    entry = Checkpoint("test-da", variant.name, "http://127.0.0.1:9/da-s.pt", digest[:8], None, "AGPL-3.0",
                       "delineate_anything")  # fmt: skip
    monkeypatch.setitem(checkpoints.CHECKPOINTS, entry.name, entry)
    monkeypatch.setenv("GEOSEG_CACHE", str(cache))
    assert resolve_family("delineate_anything", variant.name, None) == path  # copied in by hand: hashed, accepted
    loaded = load_da_net(path, variant)
    expected = {k: v.half().float() for k, v in net.state_dict().items()}
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in expected.items())


def test_foreign_or_mismatched_checkpoints_get_one_line(tmp_path: Path) -> None:
    small = _ultralytics_checkpoint(tmp_path / "s.pt", build_da_net(VARIANTS["DelineateAnything-S"]))
    with pytest.raises(WeightsError, match="does not fit the declared architecture") as err:
        load_da_net(small, VARIANTS["DelineateAnything"])
    assert "\n" not in str(err.value)
    evil = tmp_path / "evil.pt"
    torch.save({"model": Path("/etc/passwd")}, evil)  # a class the architecture is not built of
    with pytest.raises(WeightsError, match="cannot be read safely"):
        load_da_net(evil, VARIANTS["DelineateAnything-S"])


def test_predict_gives_scored_instances(tmp_path: Path) -> None:
    torch.manual_seed(1)
    path = _ultralytics_checkpoint(tmp_path / "s.pt", build_da_net(VARIANTS["DelineateAnything-S"]))
    spec = DelineateAnythingSpec(type="delineate_anything", checkpoint=str(path), confidence=0.0)
    assert model_info(spec).kind == "instance" and model_info(spec).receptive_field == 64
    pixels = np.random.default_rng(0).uniform(0, 0.3, (2, 3, 150, 140)).astype(np.float32)
    valid = np.ones((2, 150, 140), bool)
    valid[0, :, :20] = False
    outputs = DelineateAnythingModel(spec).predict(pixels, valid, [None, None])  # type: ignore[list-item]
    for out in outputs:
        assert isinstance(out, InstanceOutput) and out.labels.shape == (150, 140)
        assert {i.label for i in out.instances} == set(np.unique(out.labels)) - {0}
    first = outputs[0]
    assert isinstance(first, InstanceOutput) and (first.labels[:, :20] == 0).all()


def test_paint_higher_score_wins() -> None:
    masks = np.zeros((2, 4, 4), np.uint8)
    masks[0, :3, :3] = 1
    masks[1, 1:, 1:] = 1
    out = paint(masks, np.array([0.9, 0.4]), np.ones((4, 4), bool))
    winner = {i.label: i.score for i in out.instances}
    assert winner[int(out.labels[1, 1])] == pytest.approx(0.9)
    assert winner[int(out.labels[3, 3])] == pytest.approx(0.4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_gives_instances(tmp_path: Path) -> None:
    torch.manual_seed(1)
    path = _ultralytics_checkpoint(tmp_path / "s.pt", build_da_net(VARIANTS["DelineateAnything-S"]))
    spec = DelineateAnythingSpec(type="delineate_anything", checkpoint=str(path), confidence=0.0)
    pixels = np.random.default_rng(0).uniform(0, 0.3, (4, 3, 320, 320)).astype(np.float32)
    outputs = DelineateAnythingModel(spec, "cuda").predict(pixels, np.ones((4, 320, 320), bool), [None] * 4)  # type: ignore[list-item]
    assert all(isinstance(o, InstanceOutput) and o.labels.shape == (320, 320) for o in outputs)
