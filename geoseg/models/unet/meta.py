"""Torch-free facts about a trained U-Net: its JSON sidecar (bands, classes, normalisation, receptive field).

A U-Net checkpoint is two files with one stem: ``unet.pt`` (``torch.save({"state_dict": ..., "config": ...})``, read
by the model actors with ``torch.load(weights_only=True)``) and ``unet.json``, the sidecar the driver reads to plan a
job without importing torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from geoseg.errors import WeightsError
from geoseg.models.base import ClassInfo

Patch = tuple[np.ndarray, np.ndarray, np.ndarray]
"""A training patch: (pixels, valid pixels, labels)."""

FORMAT = "geoseg-unet"
"""Value of the sidecar's ``format`` key."""
FORMAT_VERSION = 1
IGNORE = -100
"""Training target value that cross-entropy ignores (label 0, nodata, invalid pixels)."""

PALETTE: tuple[tuple[int, int, int, int], ...] = (
    (31, 119, 180, 255),
    (255, 127, 14, 255),
    (44, 160, 44, 255),
    (214, 39, 40, 255),
    (148, 103, 189, 255),
    (140, 86, 75, 255),
    (227, 119, 194, 255),
    (127, 127, 127, 255),
    (188, 189, 34, 255),
    (23, 190, 207, 255),
)
"""Default class colours (tab10), cycled when a class has no colour of its own."""


def sidecar_path(checkpoint: str | Path) -> Path:
    """The sidecar JSON of a checkpoint: same folder and stem, suffix ``.json``."""
    return Path(checkpoint).with_suffix(".json")


def receptive_field_for(depth: int) -> int:
    """Halo (px) a U-Net of ``depth`` levels asks for: twice its coarsest pixel (its effective, not theoretical,
    reach; blending overlapping tiles hides the rest)."""
    return 2 * 2**depth


class SidecarClass(BaseModel):
    """One class of a U-Net: its value in the class raster (1..K), name and RGBA colour."""

    model_config = ConfigDict(extra="allow")

    value: int
    name: str
    color: Any = None
    """[r, g, b(, a)]; anything else falls back to the default palette."""


class UNetSidecar(BaseModel):
    """The sidecar JSON of a U-Net checkpoint: what the driver plans with, and what the model normalises with."""

    model_config = ConfigDict(extra="allow", frozen=True)

    bands: list[str] = Field(min_length=1)
    classes: list[SidecarClass] = Field(min_length=1, max_length=255)
    depth: int = Field(ge=0)
    width: int = Field(ge=0)
    mean: list[float]
    std: list[float]
    receptive_field: int = Field(ge=0)
    metrics: dict[str, Any] | None = None
    training: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> UNetSidecar:
        for i, entry in enumerate(self.classes, start=1):
            if entry.value != i:
                raise ValueError(f"class {i} must be {{value: {i}, name: ..., color: [r, g, b, a]}}")
        for key, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != len(self.bands):
                raise ValueError(f"{key} must hold one number per band ({len(self.bands)})")
        if any(s <= 0 for s in self.std):
            raise ValueError("std must be positive")
        return self


@dataclass(frozen=True)
class TrainingMetrics:
    """How a training run went (kept in the sidecar under ``metrics``)."""

    train_loss: float
    """Mean loss of the last epoch."""
    loss_history: list[float]
    val_accuracy: float | None
    """Pixel accuracy on the held-out strip."""
    val_class_accuracy: dict[str, float | None]
    val_pixels: int
    train_pixels_seen: int
    epochs: int
    steps_per_epoch: int
    device: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _hint(checkpoint: Path) -> str:
    return f"train one with: geoseg train JOB --labels LABELS.tif --out {checkpoint}"


def read_unet_metadata(path: str | Path) -> UNetSidecar:
    """Read and check the sidecar of a U-Net checkpoint (no torch).

    Args:
        path: the checkpoint (``.pt``) or its sidecar (``.json``).

    Raises:
        WeightsError: the sidecar is missing, not JSON, or inconsistent.
    """
    checkpoint = Path(path).with_suffix(".pt") if Path(path).suffix == ".json" else Path(path)
    sidecar = sidecar_path(checkpoint)
    if not sidecar.is_file():
        what = "U-Net checkpoint" if checkpoint.is_file() else "U-Net checkpoint and its sidecar"
        raise WeightsError(f"{what} {sidecar} not found (bands, classes, normalisation): {_hint(checkpoint)}")
    try:
        raw = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightsError(f"U-Net sidecar {sidecar} is not readable JSON ({err}): retrain or restore it") from None
    if not isinstance(raw, dict):
        raise WeightsError(f"U-Net sidecar {sidecar} is invalid: not a JSON object")
    try:
        return UNetSidecar.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise WeightsError(f"U-Net sidecar {sidecar} is invalid: {where + ': ' if where else ''}{message}") from None


def unet_classes(meta: UNetSidecar) -> tuple[ClassInfo, ...]:
    """The classes of a sidecar as :class:`ClassInfo` (values 1..K)."""
    return tuple(ClassInfo(c.value, c.name, _color(c.color, c.value)) for c in meta.classes)


def _color(value: Any, class_value: int) -> tuple[int, int, int, int]:
    if isinstance(value, list) and len(value) in (3, 4) and all(isinstance(v, int) for v in value):
        rgba = [*value, 255][:4]
        return (rgba[0], rgba[1], rgba[2], rgba[3])
    return PALETTE[(class_value - 1) % len(PALETTE)]
