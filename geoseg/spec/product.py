"""Spec sections of the field product: cloud / quality masks, STAC asset references, scene-relative crop-health
classes and per-field verdict rules. Re-exported by :mod:`geoseg.spec.job`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from geoseg.spec.base import StrictModel

QualityMaskKind = Literal["landsat_c2_qa_pixel", "landsat_pre_bqa", "s2_scl", "binary"]


class QualityMaskSpec(StrictModel):
    """A cloud / quality raster whose masked pixels become invalid for every model and statistic (geoseg.inputs.qa)."""

    path: str | list[str] | None = Field(
        None, description="QA raster (file, glob or list); read with nearest resampling."
    )
    asset: str | None = Field(None, description="With inputs.stac: the item's asset holding the QA raster.")
    band: int = Field(1, ge=1)
    kind: QualityMaskKind = Field(
        description="How its values are decoded (see geoseg/inputs/qa.py for the bit layouts)."
    )
    min_confidence: Literal["low", "medium", "high"] = Field(
        "medium", description="Landsat: mask cloud (and cirrus, shadow, snow if enabled) at this confidence or above."
    )
    cirrus: bool = True
    shadow: bool = Field(True, description="Landsat C2: mask cloud shadow.")
    snow: bool = False
    dilated_cloud: bool = Field(True, description="Landsat C2: mask the dilated-cloud bit.")
    scl_classes: list[int] = Field(
        default=[0, 1, 3, 8, 9, 10],
        description="Sentinel-2 SCL classes masked (default: no data, defective, cloud shadow, clouds, cirrus).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> QualityMaskSpec:
        if (self.path is None) == (self.asset is None):
            raise ValueError("give exactly one of inputs.mask.path or inputs.mask.asset (with inputs.stac)")
        return self


class StacAssetRef(StrictModel):
    """One band of a STAC asset."""

    asset: str = Field(description="Asset key in the item, e.g. B04.")
    band: int = Field(1, ge=1, description="1-based band index inside the asset's file.")


class CropHealthPercentiles(StrictModel):
    """Scene-relative class bounds: percentiles (0-100) of the classifying index over the scene's valid pixels."""

    non_vegetation: float = Field(10.0, ge=0, le=100)
    stressed: float = Field(30.0, ge=0, le=100)
    moderate: float = Field(60.0, ge=0, le=100)

    @model_validator(mode="after")
    def _ascending(self) -> CropHealthPercentiles:
        if not self.non_vegetation < self.stressed < self.moderate:
            raise ValueError("crop-health percentiles must ascend: non_vegetation < stressed < moderate")
        return self


class VerdictRules(StrictModel):
    """A field's verdict: the first rule that holds (shares of the field's observed pixels, see README).

    not_observed: share_masked >= max_masked, or share_edge_masked >= max_edge_masked, or no pixel observed;
    bare: share_non_vegetation >= bare; stressed: share_stressed >= stressed;
    watch: share_stressed + share_moderate >= watch; healthy otherwise.
    """

    max_masked: float = Field(0.3, ge=0, le=1)
    max_edge_masked: float = Field(0.3, ge=0, le=1)
    bare: float = Field(0.5, ge=0, le=1)
    stressed: float = Field(0.25, ge=0, le=1)
    watch: float = Field(0.4, ge=0, le=1)
