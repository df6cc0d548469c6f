"""Spec sections of the models: one class per ``type:``, and ``ModelSpec``, their union. Re-exported by
:mod:`geoseg.spec.job`; the model table (:mod:`geoseg.models.table`) maps each class to its model."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator

from geoseg.spec.base import StrictModel
from geoseg.spec.pretrained import DelineateAnythingSpec, FtwSpec
from geoseg.spec.product import CropHealthPercentiles, VerdictRules


class CropHealthThresholds(StrictModel):
    """Upper bounds of the health classes on the classifying index (ascending)."""

    non_vegetation: float = 0.25
    stressed: float = 0.45
    moderate: float = 0.65

    @model_validator(mode="after")
    def _ascending(self) -> CropHealthThresholds:
        if not self.non_vegetation < self.stressed < self.moderate:
            raise ValueError("crop-health thresholds must ascend: non_vegetation < stressed < moderate")
        return self


VegetationIndex = Literal["ndvi", "ndre", "evi", "savi", "gndvi", "ndmi"]


class CropHealthSpec(StrictModel):
    """Spectral crop health: vegetation indices -> health classes. No weights needed."""

    type: Literal["crop_health"]
    name: str = "crop_health"
    indices: list[VegetationIndex] = Field(default=["ndvi"])
    classify_by: VegetationIndex = "ndvi"
    classes_by: Literal["auto", "thresholds", "percentiles"] = Field(
        "auto",
        description="Health classes by absolute index thresholds or scene-relative percentiles; auto: thresholds "
        "on reflectance, percentiles on digital numbers (integer data without inputs.scale).",
    )
    thresholds: CropHealthThresholds = CropHealthThresholds()
    percentiles: CropHealthPercentiles = CropHealthPercentiles()
    verdict: VerdictRules = VerdictRules()
    smoothing_px: int = Field(
        1, ge=0, le=16, description="Majority filter radius on the classes (0: per-pixel classes)."
    )

    @property
    def receptive_field(self) -> int:
        return self.smoothing_px

    @property
    def all_indices(self) -> list[VegetationIndex]:
        """The indices computed: the classifying one first, then the others, each once."""
        return list(dict.fromkeys([self.classify_by, *self.indices]))


class FieldRegionsSpec(StrictModel):
    """Classical field segmenter (no weights): vegetated regions split along thin boundaries.

    Pixels with ``index >= threshold`` are eroded by ``erode_px`` to cut the thin strips between fields,
    labelled into connected regions, then grown back inside the vegetation mask.
    """

    type: Literal["field_regions"]
    name: str = "fields"
    index: VegetationIndex = "ndvi"
    threshold: float = 0.5
    erode_px: int = Field(1, ge=0, le=16)

    @property
    def receptive_field(self) -> int:
        return 2 * self.erode_px


MAX_EDGE_LENGTH_PX = 2.0
"""The field delineator's line filter: its sigma along a lane is at most this many pixels, whatever the pixel size."""
MAX_LONG_EDGE_LENGTH_PX = 8.0
"""Its long filter: at most this many pixels along (the halo grows with it)."""


class FieldDelineatorSpec(StrictModel):
    """Field delineator (no weights): multi-band regions, then a documented field / not-field rule per region.

    See :mod:`geoseg.models.fields.delineator` for the rules; every threshold below is in reflectance (or index)
    units and works on Sentinel-2 and Landsat 8 top-of-atmosphere reflectance without editing.
    """

    type: Literal["field_delineator"]
    name: str = "fields"
    use_swir: bool | None = Field(
        None,
        description="Read swir16 (Sentinel-2 B11, Landsat 8 B6); false: the visible rule only. Default: the job's "
        "bands decide (swir16 is read when the job has it).",
    )
    working_pixel_m: float = Field(
        10.0,
        ge=0,
        le=30,
        description="Pixels finer than this are averaged in blocks of whole pixels up to this size (m) before "
        "boundaries are sought, so that crop rows, tillage lines and wheel tracks do not cut fields; 0: never.",
    )
    min_width_m: float | None = Field(
        None,
        ge=0,
        description="Regions narrower than this (m, twice the area over the outline) are dropped: roads, verges, "
        "the wet-grass rings around ponds, strips between fields. Default: 25 m on digital numbers, off (0) on "
        "reflectance (measured there: it costs a tune field point and gains no test figure).",
    )
    water_nir_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="On digital numbers: water is NDWI above water_ndwi and NIR below this share of the scene's "
        "median NIR (uncalibrated bands shift NDWI; water stays far darker than land in NIR).",
    )
    smoothing_sigma: float = Field(1.0, ge=0, le=4, description="Gaussian smoothing (px) before the pixel rules.")
    edge_threshold: float = Field(
        0.11, gt=0, description="Line strength (log-reflectance contrast) below which a pixel may seed a field."
    )
    edge_width_px: float = Field(0.7, ge=0.3, le=3, description="Line filter: Gaussian sigma across a lane (px).")
    edge_length_m: float = Field(
        20.0,
        gt=0,
        description="Line filter: Gaussian sigma along a lane (m), at least edge_width_px and at most 2 px: "
        "2 px at 10 m follows faint lanes; at 30 m lanes are not resolved and the filter stays round.",
    )
    long_edge_length_m: float | None = Field(
        None,
        ge=0,
        description="Long line filter: Gaussian sigma along (m, at most 8 px), for a boundary faint along its "
        "whole length (a change of crop, a lane a pixel wide). Default: 80 m for pixels up to 20 m, off on "
        "coarser ones (measured: at 30 m it fuses small fields); 0 turns it off.",
    )
    long_edge_gain: float = Field(
        1.3, gt=0, description="The long filter's answer times this counts as line strength where it is larger."
    )
    neck_depth_m: float = Field(
        20.0,
        ge=0,
        description="Calm areas that narrow to a neck this much (m, in distance to their edge; at least "
        "1.5 px) are seeded apart on each side of it: a gap in a lane joins two fields only through a neck; "
        "0 turns it off.",
    )
    merge_edge_max: float = Field(
        0.08,
        ge=0,
        description="Adjacent regions whose shared boundary is weaker (line strength, see merge_quantile) "
        "are joined: a field cut at a neck or along its streaks becomes one again; 0 turns merging off.",
    )
    merge_quantile: float = Field(
        0.75,
        ge=0,
        le=1,
        description="Quantile of the line strength along a shared boundary compared with merge_edge_max.",
    )
    grow_max_m: float | None = Field(
        None,
        ge=0,
        description="A field reaches at most this far (m) beyond its calm core (its seed): a wider strip that is "
        "not calm is other land, a wet-grass ring around a pond, a verge, a shelterbelt. Default: 20 m on "
        "digital numbers, off (0) on reflectance, where the defaults were chosen without it.",
    )
    merge_similar_edge_max: float = Field(
        0.15,
        ge=0,
        description="On digital numbers: adjacent regions of one colour (merge_colour_max) whose shared boundary is "
        "weaker than this are joined too: aerial imagery shows rows, tracks and patches inside a field that "
        "satellite pixels average out; 0 turns it off.",
    )
    merge_colour_max: float = Field(
        0.03, ge=0, description="Mean log colours (RMS over bands) closer than this are one colour (merging)."
    )
    seed_erode_px: int | None = Field(
        None,
        ge=0,
        le=8,
        description="Erosion of seed areas: cuts leaks through gaps. Default: 1 px for pixels up to "
        "20 m, 0 for coarser ones (a hedge is narrower than a 30 m pixel; eroding would delete small fields' seeds).",
    )
    min_seed_m2: float = Field(
        2000,
        gt=0,
        description="Seed areas smaller than this (m², at least 1 px) are dropped; their pixels join neighbours.",
    )
    split_ndvi_step: float = Field(
        0.2,
        ge=0,
        description="A region whose NDVI falls in two solid blocks at least this far apart (a bare field beside a "
        "green one, joined where their lane ends) is split in two; 0 turns it off.",
    )
    split_bimodality: float = Field(
        0.7, ge=0, le=1, description="Share of a region's NDVI variance the two blocks must explain to split it."
    )
    split_ramp_m: float = Field(
        80.0, gt=0, description="The two blocks' NDVI step must be climbed within this distance (m) to split them."
    )
    water_ndwi: float = Field(0.0, description="Pixels with NDWI (green - NIR) above this are water.")
    bare_ndvi_min: float = Field(
        0.10, description="Pixels with NDVI below this are sand, dune grass, roofs, roads or water."
    )
    swir_min: float = Field(0.15, description="Pixels darker in SWIR are woods, marsh or water (with use_swir).")
    dry_swir_min: float = Field(
        0.10, description="Pixels dark in SWIR, but at least this bright there and dry (NDMI <= dry_ndmi_max): soil."
    )
    dry_ndmi_max: float = Field(
        0.0, description="NDMI (NIR - SWIR) at most this: dry, not a wood or wet land, however dark (haze, dark soil)."
    )
    visible_min: float = Field(
        0.068, description="Without SWIR: pixels with mean(green, red) below this are woods, marsh or water."
    )
    green_nir_min: float = Field(
        0.24, description="Pixels this bright in NIR are green crops even where SWIR is dark: woods stay darker."
    )
    texture_max: float = Field(
        0.12, gt=0, description="Pixels whose NIR std / mean (3 x 3) is above this are woods, town or a hedge."
    )
    region_texture_max: float = Field(0.08, gt=0, description="Regions with a mean texture above this are dropped.")
    merge_min_agreement: float = Field(
        0.3, ge=0, le=1, description="Share of a shared tile edge two fragments must agree on to be merged."
    )

    @property
    def bands(self) -> tuple[str, ...]:
        """Bands it reads, in channel order (``use_swir`` unset reads as set: a job spec resolves it from its
        bands, see :func:`with_job_bands`)."""
        return ("green", "red", "nir", "swir16") if self.use_swir is not False else ("green", "red", "nir")

    def with_job_bands(self, names: tuple[str, ...]) -> FieldDelineatorSpec:
        """This spec with ``use_swir`` decided by the job's band names where it was left unset."""
        if self.use_swir is not None:
            return self
        return self.model_copy(update={"use_swir": "swir16" in names})

    @property
    def receptive_field(self) -> int:
        """Halo it asks for: its local steps (the line filter or the smoothing, texture, erosion) plus room for
        the neck map, the watershed and the region rule to see a field's surroundings (24 px), so that tile sizes
        agree."""
        longest = MAX_LONG_EDGE_LENGTH_PX if self.long_edge_length_m != 0 else MAX_EDGE_LENGTH_PX
        local = max(int(4 * self.smoothing_sigma), math.ceil(3 * max(self.edge_width_px, longest)))
        return local + 1 + (1 if self.seed_erode_px is None else self.seed_erode_px) + 24


class SamSpec(StrictModel):
    """Segment Anything, automatic or prompted by points/boxes from a vector layer."""

    type: Literal["sam"]
    name: str = "objects"
    variant: str = Field(
        "vit_b", description="vit_b, vit_l or vit_h (or a variant registered at runtime); checked by the plan."
    )
    checkpoint: str | None = Field(None, description="Local .pth path; default: the verified cached download.")
    mode: Literal["automatic", "prompted"] = "automatic"
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU.")
    rgb: tuple[str, str, str] = ("red", "green", "blue")
    stretch_percentiles: tuple[float, float] = Field(
        (2.0, 98.0), description="Scene-wide percentiles mapped to 0 and 255 when the rgb bands become uint8."
    )
    prompts: str | None = Field(None, description="Vector file of points and/or polygons (boxes) for prompted mode.")
    prompts_layer: str | None = None
    prompts_from: str | None = Field(
        None,
        description="Name of another instance model of this job (a field_delineator, say) whose stitched "
        "objects prompt this one with their bounding boxes: that model proposes, SAM refines the edges.",
    )
    # automatic mask generator parameters (segment-anything's names)
    points_per_side: int = Field(32, ge=1)
    points_per_batch: int = Field(64, ge=1)
    pred_iou_thresh: float = Field(0.88, ge=0, le=1)
    stability_score_thresh: float = Field(0.95, ge=0, le=1)
    stability_score_offset: float = 1.0
    box_nms_thresh: float = Field(0.7, ge=0, le=1)
    crop_n_layers: int = Field(0, ge=0)
    crop_nms_thresh: float = Field(0.7, ge=0, le=1)
    crop_overlap_ratio: float = Field(512 / 1500, ge=0, lt=1)
    crop_n_points_downscale_factor: int = Field(1, ge=1)
    min_mask_region_area: int = Field(0, ge=0)
    # geospatial extras
    min_area_m2: float = Field(0.0, ge=0, description="Drop objects smaller than this (whole, after stitching).")
    max_area_m2: float | None = Field(None, gt=0, description="Drop objects larger than this (whole, after stitching).")
    merge_min_agreement: float = Field(
        0.5, ge=0, le=1, description="Share of a shared tile edge two fragments must agree on to be merged."
    )

    @field_validator("stretch_percentiles")
    @classmethod
    def _ascending_percentiles(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= value[0] < value[1] <= 100:
            raise ValueError(f"stretch_percentiles must satisfy 0 <= low < high <= 100, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _prompts_for_prompted(self) -> SamSpec:
        if self.mode == "prompted" and not (self.prompts or self.prompts_from):
            raise ValueError(
                "sam mode 'prompted' needs `prompts:` (a vector file of points or boxes) or `prompts_from:` (a model)"
            )
        if self.prompts and self.prompts_from:
            raise ValueError("give sam `prompts:` or `prompts_from:`, not both")
        if self.prompts_from and self.mode != "prompted":
            raise ValueError("sam `prompts_from:` needs `mode: prompted`")
        return self


class UNetSpec(StrictModel):
    """A trained U-Net (``geoseg train``): per-pixel classes and class probabilities from its checkpoint."""

    type: Literal["unet"]
    name: str = "landcover"
    checkpoint: str = Field(
        description="Trained .pt file; its sidecar .json (bands, classes, receptive field) sits beside it."
    )
    merge: Literal["core", "mean", "linear"] = Field(
        "linear", description="Overlapping tiles: core = each tile's own pixels; mean / linear = blended scores."
    )


PROMPT_SOURCE_TYPES = ("field_delineator", "field_regions", "sam", "delineate_anything")
"""Model types whose stitched objects can prompt a SAM model (``prompts_from``): the instance models."""

ModelSpec = Annotated[
    CropHealthSpec | FieldRegionsSpec | FieldDelineatorSpec | SamSpec | UNetSpec | FtwSpec | DelineateAnythingSpec,
    Field(discriminator="type"),
]

DEFAULT_HALO_PX = 32
"""The tiling halo of a spec that gives none, unless one of its models sees further."""


_MODEL_LIST = TypeAdapter(list[ModelSpec])


def models_reach(raw_models: Any) -> int | None:
    """The largest receptive field (px) of raw model specs, as far as the spec tells; None if they do not validate."""
    try:
        models = _MODEL_LIST.validate_python(raw_models)
    except ValidationError:
        return None  # the job spec's own validation reports it
    return max((getattr(model, "receptive_field", 0) for model in models), default=0)


def with_job_bands(models: list[ModelSpec], names: tuple[str, ...]) -> list[ModelSpec]:
    """The models with their optional bands decided by the job's band ``names`` (the field delineator's swir16).

    Raises:
        ValueError: a model asks for an optional band the job lacks.
    """
    resolved = [m.with_job_bands(names) if isinstance(m, FieldDelineatorSpec) else m for m in models]
    for model in resolved:
        if isinstance(model, FieldDelineatorSpec) and model.use_swir and "swir16" not in names:
            raise ValueError(
                f"model {model.name!r}: use_swir is true but inputs have no swir16 band (have: "
                f"{', '.join(names)}); add swir16 to inputs or leave use_swir out (the job's bands decide)"
            )
    return resolved


def halo_problem(halo: int, model: str, receptive_field: int) -> str | None:
    """What to change when a halo is smaller than a model's receptive field, or None."""
    if halo >= receptive_field:
        return None
    return (
        f"tiling.halo {halo} is smaller than model {model!r} sees ({receptive_field} px): "
        f"raise tiling.halo to at least {receptive_field}"
    )
