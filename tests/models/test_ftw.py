"""The ``ftw`` model type: architectures as published, checkpoints in the publishers' layouts through the registry
(download from a local HTTP server, sha256 checked), one-line errors, field instances from the classes.

No real FTW weights can be downloaded here: every network is randomly initialised, so the tests check structure,
loading and the instance rule, not field quality.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch

from geoseg.errors import SpecError, WeightsError
from geoseg.models import checkpoints, model_info
from geoseg.models.base import InstanceOutput, SemanticOutput
from geoseg.models.checkpoints import Checkpoint, download_checkpoint, resolve_family
from geoseg.models.ftw.instances import field_instances
from geoseg.models.ftw.model import FtwClassesModel, FtwFieldsModel
from geoseg.models.ftw.network import build_ftw_net, load_ftw_net
from geoseg.models.ftw.variants import FTW_CHECKPOINTS, VARIANTS
from geoseg.spec.models import FtwSpec
from geoseg.testutils.ftw import random_ftw_state, write_ftw_checkpoint

# The publishers' own statements of each architecture, copied here (not read from geoseg's registry): TorchGeo
# torchgeo/models/unet.py Unet_Weights meta (encoder, in_chans, num_classes), ftw-baselines configs/release/*.yaml
# (backbone, in_channels, num_classes) and the v2 single-window release (4 input channels).
PUBLISHED = {
    "ftw-2class": ("efficientnet-b3", 8, 2),
    "ftw-3class": ("efficientnet-b3", 8, 3),
    "ftw-v1-3class": ("efficientnet-b3", 8, 3),
    "ftw-v2-3class-1window": ("efficientnet-b3", 4, 3),
    "prue-b3": ("efficientnet-b3", 8, 3),
    "prue-b5": ("efficientnet-b5", 8, 3),
    "prue-b7": ("efficientnet-b7", 8, 3),
}
WINDOW = ["red", "green", "blue", "nir"]


def _shapes(net: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_has_the_publishers_keys_and_shapes(name: str) -> None:
    encoder, in_chans, classes = PUBLISHED[name]
    # TorchGeo's unet(): smp.create_model(arch="Unet", encoder_name, in_channels, classes, encoder_weights=None)
    published = smp.create_model(
        arch="Unet", encoder_name=encoder, encoder_weights=None, in_channels=in_chans, classes=classes
    )
    assert _shapes(build_ftw_net(VARIANTS[name])) == _shapes(published)


def test_every_registered_download_names_a_variant_and_a_license() -> None:
    assert {e.variant for e in FTW_CHECKPOINTS} <= set(VARIANTS)
    assert all(e.license and e.family == "ftw" for e in FTW_CHECKPOINTS)
    assert all(e.name in checkpoints.CHECKPOINTS for e in FTW_CHECKPOINTS)
    # TorchGeo's files carry the first 8 hex digits of their sha256 in their names (torchvision's convention)
    for entry in FTW_CHECKPOINTS:
        if "torchgeo" in entry.url:
            assert entry.filename.rsplit("-", 1)[1].split(".")[0] == entry.sha256


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A folder served on 127.0.0.1 and its URL."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_Quiet, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize(("variant", "prefix_only"), [("ftw-2class", True), ("ftw-v1-3class", False)])
def test_a_publisher_format_checkpoint_downloads_verifies_and_loads(
    http_dir: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variant: str, prefix_only: bool
) -> None:
    root, base = http_dir
    arch = VARIANTS[variant]
    state = random_ftw_state(arch, seed=3)
    served = write_ftw_checkpoint(root / f"weights-{variant}.bin", arch, state)
    digest = hashlib.sha256(served.read_bytes()).hexdigest()
    pinned = digest[:8] if prefix_only else digest  # TorchGeo pins 8 digits, the Lightning entries the whole digest
    entry = Checkpoint(f"test-{variant}", variant, f"{base}/{served.name}", pinned, None, "CC-BY-4.0", "ftw")
    monkeypatch.setitem(checkpoints.CHECKPOINTS, entry.name, entry)
    monkeypatch.setenv("GEOSEG_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsError, match=r"not in the cache .*: run: geoseg models download"):
        resolve_family("ftw", variant, None)  # offline until asked
    path = download_checkpoint(entry.name)
    assert resolve_family("ftw", variant, None) == path
    net = load_ftw_net(path, arch)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    windows = [WINDOW] * arch.windows
    model = FtwFieldsModel(FtwSpec(type="ftw", variant=variant, windows=windows))  # no checkpoint: the cached one
    assert all(torch.equal(model.net.state_dict()[k], v) for k, v in state.items())


def test_a_corrupt_download_is_refused(http_dir: tuple[Path, str], tmp_path: Path, monkeypatch) -> None:
    root, base = http_dir
    (root / "bad.pth").write_bytes(b"not the pinned file")
    entry = Checkpoint("test-bad", "ftw-3class", f"{base}/bad.pth", "0123abcd", None, "CC-BY-4.0", "ftw")
    monkeypatch.setitem(checkpoints.CHECKPOINTS, entry.name, entry)
    with pytest.raises(WeightsError, match="corrupt"):
        download_checkpoint(entry.name, tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("bad.pth*.part"))


def test_a_checkpoint_of_another_architecture_gets_one_line(tmp_path: Path) -> None:
    two = write_ftw_checkpoint(tmp_path / "two.pth", VARIANTS["ftw-2class"], random_ftw_state(VARIANTS["ftw-2class"]))
    with pytest.raises(WeightsError, match=r"does not fit the declared architecture: 2 shape\(s\) differ") as err:
        load_ftw_net(two, VARIANTS["ftw-3class"])
    assert "\n" not in str(err.value)
    with pytest.raises(WeightsError, match="not a Lightning checkpoint"):
        load_ftw_net(two, VARIANTS["prue-b3"])
    b5 = tmp_path / "b5.ckpt"
    write_ftw_checkpoint(b5, VARIANTS["ftw-v1-3class"], random_ftw_state(VARIANTS["ftw-v1-3class"]))
    with pytest.raises(WeightsError, match="key"):
        load_ftw_net(b5, VARIANTS["prue-b5"])
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(WeightsError, match="weights_only"):
        load_ftw_net(tmp_path / "junk.pth", VARIANTS["ftw-3class"])


def test_spec_errors_are_one_line() -> None:
    with pytest.raises(SpecError, match="takes 2 window"):
        model_info(FtwSpec(type="ftw", windows=[WINDOW]))
    with pytest.raises(WeightsError, match="unknown ftw variant 'prue-b9'"):
        model_info(FtwSpec(type="ftw", variant="prue-b9", windows=[WINDOW, WINDOW]))
    with pytest.raises(ValueError, match="4 bands"):
        FtwSpec(type="ftw", windows=[["red", "green", "blue"], WINDOW])
    info = model_info(FtwSpec(type="ftw", windows=[WINDOW, ["red_b", "green_b", "blue_b", "nir_b"]]))
    assert info.kind == "instance" and len(info.bands) == 8 and info.receptive_field == 66
    same = model_info(FtwSpec(type="ftw", windows=[WINDOW, WINDOW], output="classes"))
    assert same.bands == tuple(WINDOW) and [c.name for c in same.classes] == ["background", "field", "boundary"]


def test_field_instances_split_on_boundaries_and_give_them_back() -> None:
    classes = np.ones((12, 12), np.uint8)
    classes[:, 6] = 2  # a boundary line between two fields
    classes[0, 0] = 0
    classes[10:, 10:] = 0
    classes[11, 11] = 1  # a 1-px field: dropped
    valid = np.ones_like(classes, bool)
    valid[:, 0] = False
    labels, count = field_instances(classes, valid, boundary_px=1, min_px=2)
    assert count == 2
    assert set(np.unique(labels[:, 1:6])) == {1} and set(np.unique(labels[:10, 7:10])) == {2}
    assert labels[5, 6] in (1, 2)  # the boundary joined a neighbour
    assert (labels[:, 0] == 0).all() and labels[11, 11] == 0
    no_growth, _ = field_instances(classes, valid, boundary_px=0, min_px=2)
    assert (no_growth[:, 6] == 0).all()


def test_models_predict_instances_and_probabilities(tmp_path: Path) -> None:
    arch = VARIANTS["ftw-3class"]
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0.0, 0.4, (2, 4, 100, 90)).astype(np.float32)  # not a multiple of 32: padded, cropped
    sample = np.concatenate([pixels[0], pixels[0]]) * (10000 / 3000)
    path = write_ftw_checkpoint(tmp_path / "net.pth", arch, random_ftw_state(arch, 1, sample))
    valid = np.ones((2, 100, 90), bool)
    valid[1, :10] = False
    spec = FtwSpec(type="ftw", checkpoint=str(path), windows=[WINDOW, WINDOW])
    fields = FtwFieldsModel(spec).predict(pixels, valid, [None, None])  # type: ignore[list-item]
    assert all(isinstance(o, InstanceOutput) and o.labels.shape == (100, 90) for o in fields)
    first = fields[0]
    assert isinstance(first, InstanceOutput) and first.instances
    assert {i.label for i in first.instances} == set(np.unique(first.labels)) - {0}
    assert all(0 <= i.score <= 1 for i in first.instances)
    assert isinstance(fields[1], InstanceOutput) and (fields[1].labels[:10] == 0).all()
    classes = FtwClassesModel(spec.model_copy(update={"output": "classes"})).predict(pixels, valid, [None, None])  # type: ignore[list-item]
    out = classes[1]
    assert isinstance(out, SemanticOutput) and out.scores is not None
    assert (out.classes[:10] == 0).all() and set(np.unique(out.classes[10:])) <= {1, 2, 3}
    np.testing.assert_allclose(out.scores[:, 10:].astype(np.float32).sum(axis=0), 1, atol=2e-3)


def test_models_list_shows_ftw_with_license(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch) -> None:
    from geoseg.cli import main

    monkeypatch.setenv("GEOSEG_CACHE", str(tmp_path))
    assert main(["models", "list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "CC-BY-4.0" in rows["ftw-3class"] and "? MiB" in rows["ftw-3class"]  # TorchGeo states no size
    assert " ftw " in rows["prue-b7"] and "AGPL-3.0" in rows["DelineateAnything"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_matches_cpu_fp32(tmp_path: Path) -> None:
    arch = VARIANTS["ftw-3class"]
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0.0, 0.4, (4, 4, 256, 256)).astype(np.float32)
    path = write_ftw_checkpoint(tmp_path / "net.pth", arch, random_ftw_state(arch, 1, np.concatenate([pixels[0]] * 2)))
    spec = FtwSpec(type="ftw", checkpoint=str(path), windows=[WINDOW, WINDOW], output="classes")
    valid = np.ones((4, 256, 256), bool)
    cpu = FtwClassesModel(spec).probabilities(pixels, valid)
    gpu = FtwClassesModel(spec, "cuda").probabilities(pixels, valid).cpu()
    assert float((gpu - cpu).abs().max()) < 0.05  # bf16 autocast vs fp32
