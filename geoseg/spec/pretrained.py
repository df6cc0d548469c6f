"""Spec sections of the community's pretrained field models: Fields of The World (``ftw``) and Delineate Anything."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from geoseg.spec.base import StrictModel


class FtwSpec(StrictModel):
    """Fields of The World U-Net (:mod:`geoseg.models.ftw`): field instances, or its classes and probabilities."""

    type: Literal["ftw"]
    name: str = "fields"
    variant: str = Field(
        "ftw-3class", description="ftw-2class, ftw-3class, ftw-v1-3class, ftw-v2-3class-1window, prue-b3/b5/b7."
    )
    checkpoint: str | None = Field(None, description="Local weights file; default: the variant's cached download.")
    windows: list[list[str]] = Field(
        min_length=1,
        max_length=2,
        description="The job's bands of each window, red, green, blue, NIR: the planting window, then the harvest "
        "window (one window for single-window variants).",
    )
    input_scale: float = Field(
        10000 / 3000,
        gt=0,
        description="Multiplies the job's pixel values into the net's input (FTW: Sentinel-2 DN / 3000); the "
        "default fits reflectance (inputs.scale 0.0001); 1/3000 for raw digital numbers.",
    )
    output: Literal["fields", "classes"] = Field(
        "fields",
        description="fields: one polygon per field; classes: background/field/boundary classes and "
        "their probabilities (blended across tiles, see merge).",
    )
    halo_px: int = Field(
        64, ge=0, description="Context the net sees around a tile (FTW's own inference discards 64 px per side)."
    )
    boundary_px: int = Field(
        2, ge=0, le=8, description="Boundary pixels within this distance of a field join the nearest field."
    )
    min_field_px: int = Field(4, ge=1, description="Field components smaller than this (px) are dropped.")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU.")
    merge: Literal["core", "mean", "linear"] = Field("linear", description="output classes: how tiles combine.")
    merge_min_agreement: float = Field(
        0.3, ge=0, le=1, description="Share of a shared tile edge two fragments must agree on to be merged."
    )

    @field_validator("windows")
    @classmethod
    def _four_bands(cls, value: list[list[str]]) -> list[list[str]]:
        for window in value:
            if len(window) != 4:
                raise ValueError(f"each ftw window names 4 bands (red, green, blue, nir), got {window}")
        return value

    @property
    def receptive_field(self) -> int:
        return self.halo_px + self.boundary_px


class DelineateAnythingSpec(StrictModel):
    """Delineate Anything (YOLO11 instance segmentation, optional extra ``geoseg[delineate-anything]``, AGPL-3.0)."""

    type: Literal["delineate_anything"]
    name: str = "fields"
    variant: str = Field("DelineateAnything-S", description="DelineateAnything-S (yolo11n) or DelineateAnything (x).")
    checkpoint: str | None = Field(None, description="Local .pt file; default: the variant's cached download.")
    rgb: tuple[str, str, str] = ("red", "green", "blue")
    input_scale: float = Field(
        10000 / 3000,
        gt=0,
        description="Multiplies the job's pixel values into the net's 0..1 input (clipped): the default maps "
        "reflectance 0.3 (Sentinel-2 DN 3000, the publisher's) to 1; 1/255 for 8-bit aerial RGB.",
    )
    confidence: float = Field(0.05, ge=0, le=1, description="Detections below this score are dropped.")
    iou: float = Field(0.3, ge=0, le=1, description="Non-maximum suppression IoU.")
    max_detections: int = Field(300, ge=1, description="Per tile.")
    halo_px: int = Field(
        64,
        ge=0,
        description="Context around a tile: a field cut by the read window is seen whole "
        "by the tile that owns it when it is smaller than this.",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU.")
    min_area_m2: float = Field(0.0, ge=0, description="Drop fields smaller than this (whole, after stitching).")
    merge_min_agreement: float = Field(
        0.5, ge=0, le=1, description="Share of a shared tile edge two fragments must agree on to be merged."
    )

    @property
    def receptive_field(self) -> int:
        return self.halo_px
