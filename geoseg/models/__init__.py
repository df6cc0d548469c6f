"""Models behind one interface (:class:`~geoseg.models.base.Model`); :func:`build_model` picks one from a spec."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from geoseg.models.base import ClassInfo, Model, SceneInfo
from geoseg.models.catalog import HEALTH_CLASSES, bands_for
from geoseg.spec import CropHealthSpec, FieldDelineatorSpec, FieldRegionsSpec, ModelSpec, SamSpec, UNetSpec


def build_model(spec: ModelSpec, scene: SceneInfo, device: str = "cpu") -> Model:
    """Build the model a spec names, on a device ("cpu" or "cuda[:n]")."""
    if isinstance(spec, CropHealthSpec):
        from geoseg.models.crop_health import build_crop_health

        return build_crop_health(spec, scene, device)
    if isinstance(spec, FieldRegionsSpec):
        from geoseg.models.field_regions import build_field_regions

        return build_field_regions(spec, scene, device)
    if isinstance(spec, FieldDelineatorSpec):
        from geoseg.models.field_delineator import build_field_delineator

        return build_field_delineator(spec, scene, device)
    if isinstance(spec, SamSpec):
        from geoseg.models.sam import build_sam

        return build_sam(spec, scene, device)
    if isinstance(spec, UNetSpec):
        from geoseg.models.unet import build_unet

        return build_unet(spec, scene, device)
    raise TypeError(f"no model for spec {type(spec).__name__}")


@dataclass(frozen=True)
class ModelInfo:
    """What the driver needs to know of a model without building it (no weights loaded)."""

    name: str
    kind: Literal["semantic", "instance"]
    bands: tuple[str, ...]
    classes: tuple[ClassInfo, ...] = ()
    merge_min_agreement: float = 0.0
    prompts: str | None = None
    prompts_layer: str | None = None
    merge: str = "core"
    """How overlapping tiles combine for a semantic model: ``core``, or a blend from :mod:`geoseg.blend`."""


def resolve_device(device: str) -> str:
    """The device to use: CUDA when asked for and visible, otherwise CPU (the fallback)."""
    import torch

    return device if device.startswith("cuda") and torch.cuda.is_available() else "cpu"


def model_info(spec: ModelSpec) -> ModelInfo:
    """Describe a model spec: its kind, the bands it reads, its classes, how its fragments merge."""
    if isinstance(spec, CropHealthSpec):
        return ModelInfo(spec.name, "semantic", bands_for(spec.all_indices), HEALTH_CLASSES)
    if isinstance(spec, FieldRegionsSpec):
        return ModelInfo(spec.name, "instance", bands_for([spec.index]))
    if isinstance(spec, FieldDelineatorSpec):
        return ModelInfo(spec.name, "instance", spec.bands, (), spec.merge_min_agreement)
    if isinstance(spec, UNetSpec):
        from geoseg.models.unet_meta import read_unet_metadata, unet_classes  # torch-free

        meta = read_unet_metadata(spec.checkpoint)
        return ModelInfo(spec.name, "semantic", tuple(meta["bands"]), unet_classes(meta), merge=spec.merge)
    prompts = spec.prompts if spec.mode == "prompted" else None
    return ModelInfo(spec.name, "instance", tuple(spec.rgb), (), spec.merge_min_agreement, prompts, spec.prompts_layer)
