"""The model table: one entry per spec type, the only place that knows which spec goes with which model.

Like rasterio's merge-method table, the rest of geoseg looks a spec's type up here instead of asking
``isinstance``: the driver reads :func:`model_info` (torch-free), the model actors call :func:`build_model`.

Each :class:`ModelType` entry says:

- ``builder``: ``"module:function"`` building the :class:`~geoseg.models.base.Model` from (spec, scene, device);
  imported only inside the model actors, so torch never loads in the driver;
- ``info``: the spec's :class:`~geoseg.models.base.ModelInfo` (kind, bands, classes, merge, receptive field);
  torch-free, may read a small sidecar file; raises a ``GeosegError`` for a spec that cannot run;
- ``stats``: for a model whose output gives per-object statistics to the other layers, its role;
- ``stretch_bands``: bands the model stretches with scene-wide percentiles (computed once by the plan);
- ``scene_indices``: vegetation indices whose scene-wide percentiles the model needs (computed once by the plan);
- ``checkpoint_files``: the weights files the model loads, resolved and checked before Ray starts (so no tile
  fails on missing weights); ``--resume`` hashes them;
- ``cheap``: a CPU model cheap next to reading its pixels (spectral indices): a job of only such models on CPU runs
  each tile's read, models and finish in one worker process instead of shipping pixels to model actors.

Adding a model type:

1. its spec class in :mod:`geoseg.spec.models` (a ``type: Literal[...]`` field, added to ``ModelSpec``);
2. its model in ``geoseg/models/<type>.py`` with a builder ``build_<type>(spec, scene, device)``;
3. one entry in :data:`MODEL_TYPES` below (and a row in README's model table).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoseg.errors import SpecError, WeightsError
from geoseg.models.base import Model, ModelInfo, SceneInfo, StatsRole
from geoseg.models.checkpoints import resolve_checkpoint, resolve_family
from geoseg.models.crop_health.catalog import HEALTH_CLASSES, bands_for
from geoseg.models.delineate_anything.variants import da_variant
from geoseg.models.ftw.variants import ftw_bands, ftw_classes, ftw_variant
from geoseg.models.sam.variants import variant_config
from geoseg.models.unet.meta import read_unet_metadata, sidecar_path, unet_classes
from geoseg.spec.job import CropHealthSpec, FieldDelineatorSpec, FieldRegionsSpec, ModelSpec, SamSpec, UNetSpec
from geoseg.spec.models import DelineateAnythingSpec, FtwSpec


def _no_bands(spec: Any) -> tuple[str, ...]:
    return ()


def _no_checkpoint(spec: Any) -> tuple[Path, ...]:
    return ()


@dataclass(frozen=True)
class ModelType:
    """How geoseg handles one spec type (see the module docstring)."""

    builder: str
    info: Callable[[Any], ModelInfo]
    stats: Callable[[Any], StatsRole] | None = None
    stretch_bands: Callable[[Any], tuple[str, ...]] = _no_bands
    scene_indices: Callable[[Any], tuple[str, ...]] = _no_bands
    checkpoint_files: Callable[[Any], tuple[Path, ...]] = _no_checkpoint
    cheap: bool = False


# --------------------------------------------------------------------------------------------- per type
def _crop_health_info(spec: CropHealthSpec) -> ModelInfo:
    return ModelInfo(
        spec.name, "semantic", bands_for(spec.all_indices), HEALTH_CLASSES, receptive_field=spec.receptive_field
    )


def _crop_health_stats(spec: CropHealthSpec) -> StatsRole:
    hists = tuple(dict.fromkeys(i for i in (spec.classify_by, "ndvi", "ndre") if i in spec.all_indices))
    return StatsRole(spec.name, HEALTH_CLASSES, hist_layers=hists, verdict=spec.verdict)


def _crop_health_scene_indices(spec: CropHealthSpec) -> tuple[str, ...]:
    return (spec.classify_by,) if spec.classes_by != "thresholds" else ()


def _field_regions_info(spec: FieldRegionsSpec) -> ModelInfo:
    return ModelInfo(spec.name, "instance", bands_for([spec.index]), receptive_field=spec.receptive_field)


def _field_delineator_info(spec: FieldDelineatorSpec) -> ModelInfo:
    return ModelInfo(
        spec.name, "instance", spec.bands, (), spec.merge_min_agreement, receptive_field=spec.receptive_field
    )


def _sam_info(spec: SamSpec) -> ModelInfo:
    variant_config(spec.variant)  # a clear error for an unknown variant
    prompts = spec.prompts if spec.mode == "prompted" else None
    return ModelInfo(
        spec.name,
        "instance",
        tuple(spec.rgb),
        (),
        spec.merge_min_agreement,
        prompts,
        spec.prompts_layer,
        prompts_from=spec.prompts_from,
        min_area_m2=spec.min_area_m2,
        max_area_m2=spec.max_area_m2,
    )


def _unet_info(spec: UNetSpec) -> ModelInfo:
    meta = read_unet_metadata(spec.checkpoint)
    return ModelInfo(
        spec.name,
        "semantic",
        tuple(meta.bands),
        unet_classes(meta),
        merge=spec.merge,
        receptive_field=meta.receptive_field,
    )


def _ftw_info(spec: FtwSpec) -> ModelInfo:
    variant = ftw_variant(spec.variant)
    if len(spec.windows) != variant.windows:
        raise SpecError(
            f"model {spec.name!r}: ftw variant {variant.name} takes {variant.windows} window(s) of red, green, blue, "
            f"nir; `windows:` gives {len(spec.windows)}"
        )
    if spec.output == "classes":
        classes = ftw_classes(variant)
        return ModelInfo(
            spec.name, "semantic", ftw_bands(spec), classes, merge=spec.merge, receptive_field=spec.receptive_field
        )
    return ModelInfo(
        spec.name, "instance", ftw_bands(spec), (), spec.merge_min_agreement, receptive_field=spec.receptive_field
    )


def _da_info(spec: DelineateAnythingSpec) -> ModelInfo:
    da_variant(spec.variant)  # a clear error for an unknown variant
    return ModelInfo(
        spec.name,
        "instance",
        tuple(spec.rgb),
        (),
        spec.merge_min_agreement,
        receptive_field=spec.receptive_field,
        min_area_m2=spec.min_area_m2,
    )


MODEL_TYPES: dict[type, ModelType] = {
    CropHealthSpec: ModelType(
        builder="geoseg.models.crop_health.cpu:build_crop_health",
        info=_crop_health_info,
        stats=_crop_health_stats,
        scene_indices=_crop_health_scene_indices,
        cheap=True,
    ),
    FieldRegionsSpec: ModelType(builder="geoseg.models.fields.regions:build_field_regions", info=_field_regions_info),
    FieldDelineatorSpec: ModelType(
        builder="geoseg.models.fields.delineator:build_field_delineator",
        info=_field_delineator_info,
        stretch_bands=lambda spec: spec.bands,  # its scene-relative levels on digital numbers
    ),
    SamSpec: ModelType(
        builder="geoseg.models.sam.model:build_sam",
        info=_sam_info,
        stretch_bands=lambda spec: tuple(spec.rgb),
        checkpoint_files=lambda spec: (resolve_checkpoint(spec.variant, spec.checkpoint),),
    ),
    UNetSpec: ModelType(
        builder="geoseg.models.unet.model:build_unet",
        info=_unet_info,
        checkpoint_files=lambda spec: (Path(spec.checkpoint), sidecar_path(spec.checkpoint)),
    ),
    FtwSpec: ModelType(
        builder="geoseg.models.ftw.model:build_ftw",
        info=_ftw_info,
        checkpoint_files=lambda spec: (resolve_family("ftw", spec.variant, spec.checkpoint),),
    ),
    DelineateAnythingSpec: ModelType(
        builder="geoseg.models.delineate_anything.model:build_delineate_anything",
        info=_da_info,
        checkpoint_files=lambda spec: (resolve_family("delineate_anything", spec.variant, spec.checkpoint),),
    ),
}
"""Spec type -> how geoseg handles it."""


# --------------------------------------------------------------------------------------------- lookups
def model_type(spec: ModelSpec) -> ModelType:
    """The table entry of a spec."""
    try:
        return MODEL_TYPES[type(spec)]
    except KeyError:
        raise TypeError(f"no model type registered for spec {type(spec).__name__}") from None


def model_info(spec: ModelSpec) -> ModelInfo:
    """Describe a model spec: its kind, the bands it reads, its classes, how its fragments merge."""
    return model_type(spec).info(spec)


def build_model(spec: ModelSpec, scene: SceneInfo, device: str = "cpu") -> Model:
    """Build the model a spec names, on a device ("cpu" or "cuda[:n]"); imports its module (and torch) now."""
    module, function = model_type(spec).builder.split(":")
    builder: Callable[[Any, SceneInfo, str], Model] = getattr(importlib.import_module(module), function)
    return builder(spec, scene, device)


def stats_role(specs: list[ModelSpec]) -> StatsRole | None:
    """The role of the job's first model that gives per-object statistics, if any."""
    for spec in specs:
        stats = model_type(spec).stats
        if stats is not None:
            return stats(spec)
    return None


def stretch_bands(specs: list[ModelSpec]) -> tuple[str, ...]:
    """Bands some model stretches with scene-wide percentiles, each once, in first-use order."""
    return tuple(dict.fromkeys(band for spec in specs for band in model_type(spec).stretch_bands(spec)))


def scene_indices(specs: list[ModelSpec]) -> tuple[str, ...]:
    """Vegetation indices some model needs scene-wide percentiles of, each once."""
    return tuple(dict.fromkeys(index for spec in specs for index in model_type(spec).scene_indices(spec)))


def checkpoint_files(specs: list[ModelSpec]) -> list[Path]:
    """Every weights file the job's models load; a one-line error for one that is missing."""
    files = [path for spec in specs for path in model_type(spec).checkpoint_files(spec)]
    for path in files:
        if not path.is_file():
            raise WeightsError(f"checkpoint {path} not found: fix `checkpoint:` in the model spec")
    return files


def all_cheap(specs: list[ModelSpec]) -> bool:
    """Whether every model of the job is cheap enough to run where its pixels are read (see ``cheap``)."""
    return all(model_type(spec).cheap for spec in specs)
