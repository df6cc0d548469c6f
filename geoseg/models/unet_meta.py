"""Torch-free facts about a trained U-Net: its JSON sidecar (bands, classes, normalisation, receptive field).

A U-Net checkpoint is two files with one stem: ``unet.pt`` (``torch.save({"state_dict": ..., "config": ...})``, read
by the model actors with ``torch.load(weights_only=True)``) and ``unet.json``, the sidecar the driver reads to plan a
job without importing torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from geoseg.errors import WeightsError
from geoseg.models.base import ClassInfo

FORMAT = "geoseg-unet"
"""Value of the sidecar's ``format`` key."""
FORMAT_VERSION = 1
DEFAULT_RECEPTIVE_FIELD = 16
"""Halo asked of a U-Net whose sidecar cannot be read yet (a job validated before its model is trained)."""
REQUIRED_KEYS = ("bands", "classes", "depth", "width", "mean", "std", "receptive_field")

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


def _hint(checkpoint: Path) -> str:
    return f"train one with: geoseg train JOB --labels LABELS.tif --out {checkpoint}"


def read_unet_metadata(path: str | Path) -> dict[str, Any]:
    """Read and check the sidecar of a U-Net checkpoint (no torch).

    Args:
        path: the checkpoint (``.pt``) or its sidecar (``.json``).

    Returns:
        The sidecar mapping: ``bands``, ``classes`` (``value``, ``name``, ``color``), ``depth``, ``width``, ``mean``,
        ``std``, ``receptive_field`` and whatever else it holds (``metrics``).

    Raises:
        WeightsError: the sidecar is missing, not JSON, or inconsistent.
    """
    checkpoint = Path(path).with_suffix(".pt") if Path(path).suffix == ".json" else Path(path)
    sidecar = sidecar_path(checkpoint)
    if not sidecar.is_file():
        what = "U-Net checkpoint" if checkpoint.is_file() else "U-Net checkpoint and its sidecar"
        raise WeightsError(f"{what} {sidecar} not found (bands, classes, normalisation): {_hint(checkpoint)}")
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightsError(f"U-Net sidecar {sidecar} is not readable JSON ({err}): retrain or restore it") from None
    problem = _problem(meta)
    if problem:
        raise WeightsError(f"U-Net sidecar {sidecar} is invalid: {problem}")
    return dict(meta)


def _problem(meta: Any) -> str | None:
    """What is wrong with a sidecar mapping, or None."""
    if not isinstance(meta, dict):
        return "not a JSON object"
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        return f"missing {', '.join(missing)}"
    bands, classes = meta["bands"], meta["classes"]
    if not isinstance(bands, list) or not bands or not all(isinstance(b, str) for b in bands):
        return "bands must be a non-empty list of band names"
    if not isinstance(classes, list) or not classes:
        return "classes must be a non-empty list"
    for i, entry in enumerate(classes, start=1):
        if not isinstance(entry, dict) or entry.get("value") != i or not isinstance(entry.get("name"), str):
            return f"class {i} must be {{value: {i}, name: ..., color: [r, g, b, a]}}"
    if len(classes) > 255:
        return "at most 255 classes"
    for key in ("mean", "std"):
        values = meta[key]
        if not isinstance(values, list) or len(values) != len(bands):
            return f"{key} must hold one number per band ({len(bands)})"
    if any(not isinstance(s, (int, float)) or s <= 0 for s in meta["std"]):
        return "std must be positive"
    for key in ("depth", "width", "receptive_field"):
        if not isinstance(meta[key], int) or meta[key] < 0:
            return f"{key} must be a non-negative integer"
    return None


def unet_classes(meta: dict[str, Any]) -> tuple[ClassInfo, ...]:
    """The classes of a sidecar as :class:`ClassInfo` (values 1..K)."""
    return tuple(
        ClassInfo(int(c["value"]), str(c["name"]), _color(c.get("color"), int(c["value"]))) for c in meta["classes"]
    )


def _color(value: Any, class_value: int) -> tuple[int, int, int, int]:
    if isinstance(value, list) and len(value) in (3, 4) and all(isinstance(v, int) for v in value):
        rgba = [*value, 255][:4]
        return (rgba[0], rgba[1], rgba[2], rgba[3])
    return PALETTE[(class_value - 1) % len(PALETTE)]


def sidecar_receptive_field(checkpoint: str | Path) -> int:
    """The sidecar's receptive field when it can be read, else :data:`DEFAULT_RECEPTIVE_FIELD` (never raises)."""
    try:
        return int(read_unet_metadata(checkpoint)["receptive_field"])
    except WeightsError:
        return DEFAULT_RECEPTIVE_FIELD
