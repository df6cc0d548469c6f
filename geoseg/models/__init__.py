"""3. The models behind one interface (:class:`~geoseg.models.base.Model`), picked from a spec by the model table
(:mod:`geoseg.models.table`)."""

from __future__ import annotations

from geoseg.models.base import ModelInfo, StatsRole
from geoseg.models.table import MODEL_TYPES, ModelType, build_model, model_info, model_type


def resolve_device(device: str) -> str:
    """The device to use: CUDA when asked for and visible, otherwise CPU (the fallback; torch is not imported)."""
    if not device.startswith("cuda"):
        return "cpu"
    import torch

    return device if torch.cuda.is_available() else "cpu"


__all__ = [
    "MODEL_TYPES",
    "ModelInfo",
    "ModelType",
    "StatsRole",
    "build_model",
    "model_info",
    "model_type",
    "resolve_device",
]
