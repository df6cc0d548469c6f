"""A small trainable U-Net for per-pixel classes (land cover, crop health), and its checkpoint format.

A checkpoint is ``NAME.pt`` = ``torch.save({"state_dict": ..., "config": {...}})`` (tensors and primitive types only,
loadable with ``torch.load(weights_only=True)``) plus the sidecar ``NAME.json`` (:mod:`geoseg.models.unet.meta`):
bands, classes, per-band mean/std, receptive field. ``geoseg train`` (:mod:`geoseg.train`) writes both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geoseg.atomic import atomic_write
from geoseg.errors import OutputError, OutputExistsError, WeightsError, error_gist
from geoseg.models.base import Model, ModelOutput, SceneInfo, TileContext
from geoseg.models.semantic import semantic_outputs
from geoseg.models.unet.meta import (
    FORMAT,
    FORMAT_VERSION,
    UNetSidecar,
    read_unet_metadata,
    sidecar_path,
    unet_classes,
)
from geoseg.spec.job import UNetSpec


# --------------------------------------------------------------------------------------------- network
def _block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 conv + batch norm + ReLU (padding keeps the size; eval-mode batch norm is per pixel, so a pixel's
    output does not depend on the rest of its tile beyond the convolutions' reach)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net: ``depth`` downsamplings, ``width`` channels at full resolution, doubled per level.

    Any input size works: the input is zero-padded (bottom/right) to a multiple of ``2**depth`` and the logits are
    cropped back, so ``forward`` returns (N, n_classes, H, W) for (N, in_channels, H, W).
    """

    def __init__(self, in_channels: int, n_classes: int, depth: int = 3, width: int = 16) -> None:
        super().__init__()
        self.in_channels, self.n_classes, self.depth, self.width = in_channels, n_classes, depth, width
        widths = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([_block(in_channels, widths[0])])
        self.down.extend(_block(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth))
        self.merge = nn.ModuleList(_block(2 * widths[i], widths[i]) for i in range(depth))
        self.head = nn.Conv2d(widths[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        step = 2**self.depth
        x = F.pad(x, (0, -width % step, 0, -height % step))
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for i in reversed(range(self.depth)):
            x = self.merge[i](torch.cat([skips.pop(), self.up[i](x)], dim=1))
        return self.head(x)[..., :height, :width]


def normalise(pixels: torch.Tensor, valid: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std per band; invalid pixels become 0 (the band mean), like the padding."""
    x = (pixels - mean[:, None, None]) / std[:, None, None]
    return torch.where(valid[:, None], x, torch.zeros_like(x))


def autocast(device: torch.device) -> Any:
    """bf16 autocast on CUDA, nothing (fp32) on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


# --------------------------------------------------------------------------------------------- checkpoints
def unet_config(in_channels: int, n_classes: int, depth: int, width: int) -> dict[str, int]:
    """The ``config`` entry of a checkpoint: what :class:`UNet` is built from."""
    return {"in_channels": in_channels, "n_classes": n_classes, "depth": depth, "width": width}


def save_unet(path: str | Path, net: UNet, meta: UNetSidecar, overwrite: bool = False) -> Path:
    """Save a checkpoint (``.pt``) and its sidecar (``.json``), each written to a temp file and renamed.

    Args:
        path: the ``.pt`` file; the sidecar goes beside it with suffix ``.json``.
        net: the trained network (saved as a CPU state_dict).
        meta: sidecar content.
        overwrite: replace an existing checkpoint.

    Raises:
        OutputExistsError: the checkpoint or its sidecar exists and ``overwrite`` is False.
        OutputError: the path does not end in ``.pt`` or its folder cannot be created.
    """
    path = Path(path)
    if path.suffix not in (".pt", ".pth"):
        raise OutputError(f"U-Net checkpoint {path} must end in .pt (its sidecar .json goes beside it)")
    sidecar = sidecar_path(path)
    for existing in (path, sidecar):
        if existing.exists() and not overwrite:
            raise OutputExistsError(f"{existing} exists: pass --overwrite to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create {path.parent}: {err.strerror or err}") from None
    if (len(meta.bands), len(meta.classes)) != (net.in_channels, net.n_classes):
        raise ValueError("meta's bands and classes do not match the network's channels")
    config = unet_config(net.in_channels, net.n_classes, net.depth, net.width)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    body = {
        **{key: value for key, value in meta.model_dump().items() if value is not None},
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "depth": net.depth,
        "width": net.width,
    }
    atomic_write(path, lambda tmp: torch.save({"state_dict": state, "config": config}, tmp))
    atomic_write(sidecar, lambda tmp: tmp.write_text(json.dumps(body, indent=2) + "\n"))
    return path


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``torch.load(weights_only=True)`` of a checkpoint, with one-line errors."""
    if not path.is_file():
        raise WeightsError(
            f"U-Net checkpoint {path} not found: train one with: geoseg train JOB --labels LABELS.tif --out {path}"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle, zip and runtime errors for damaged files
        raise WeightsError(f"U-Net checkpoint {path} is truncated or corrupt ({error_gist(err)}): retrain") from None
    if not (isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict) and "config" in payload):
        raise WeightsError(f"U-Net checkpoint {path} is not a geoseg U-Net checkpoint (no state_dict + config)")
    return payload["state_dict"], dict(payload["config"])


def load_unet(path: str | Path, device: str = "cpu") -> tuple[UNet, UNetSidecar]:
    """Load a checkpoint and its sidecar: the network in eval mode on ``device``, and the sidecar mapping.

    Raises:
        WeightsError: a file is missing or corrupt, or the weights do not match the config or the sidecar.
    """
    path = Path(path)
    meta = read_unet_metadata(path)
    state, config = _read_checkpoint(path)
    expected = unet_config(len(meta.bands), len(meta.classes), meta.depth, meta.width)
    if config != expected:
        raise WeightsError(f"U-Net checkpoint {path} does not match its sidecar: config {config}, sidecar {expected}")
    net = UNet(**expected)
    try:
        net.load_state_dict(state)
    except (RuntimeError, KeyError) as err:
        raise WeightsError(
            f"U-Net checkpoint {path}: state_dict does not match its config (depth {meta.depth}, width "
            f"{meta.width}): {error_gist(err)}"
        ) from None
    return net.to(torch.device(device)).eval(), meta


# --------------------------------------------------------------------------------------------- model
class UNetModel(Model):
    """Classes 1..K and their probabilities per pixel from a trained U-Net."""

    kind = "semantic"

    def __init__(self, checkpoint: str | Path, name: str = "landcover", device: str = "cpu") -> None:
        self.name = name
        self.device = torch.device(device)
        self.net, self.meta = load_unet(checkpoint, device)
        self.bands = tuple(self.meta.bands)
        self.classes = unet_classes(self.meta)
        self.mean = torch.tensor(self.meta.mean, dtype=torch.float32, device=self.device)
        self.std = torch.tensor(self.meta.std, dtype=torch.float32, device=self.device)

    @torch.inference_mode()
    def probabilities(self, pixels: np.ndarray, valid: np.ndarray) -> torch.Tensor:
        """float32 (N, K, H, W) class probabilities, 0 where invalid."""
        stack = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).to(self.device)
        mask = torch.from_numpy(np.ascontiguousarray(valid, dtype=bool)).to(self.device)
        with autocast(self.device):
            logits = self.net(normalise(stack, mask, self.mean, self.std))
        probs = torch.softmax(logits.float(), dim=1)
        return torch.where(mask[:, None], probs, torch.zeros_like(probs))

    def predict(self, pixels: np.ndarray, valid: np.ndarray, contexts: list[TileContext]) -> list[ModelOutput]:
        return semantic_outputs(self.probabilities(pixels, valid), valid)


def check_bands(meta: UNetSidecar, available: Sequence[str], source: str) -> None:
    """Raise a one-line WeightsError when the job lacks bands the checkpoint was trained on."""
    missing = [b for b in meta.bands if b not in available]
    if missing:
        raise WeightsError(
            f"U-Net {source} needs band(s) {', '.join(missing)} that the job lacks (has: {', '.join(available)}): "
            f"add them to inputs or train on these bands"
        )


def build_unet(spec: UNetSpec, scene: SceneInfo, device: str) -> UNetModel:
    """Builder used by the model registry."""
    check_bands(read_unet_metadata(spec.checkpoint), scene.band_names, spec.checkpoint)
    return UNetModel(spec.checkpoint, spec.name, device)
