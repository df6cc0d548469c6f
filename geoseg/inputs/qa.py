"""Cloud and quality masks: a QA raster's values -> which pixels are masked (invalid for every model and statistic).

Layouts (bit 0 is the least significant bit; a 2-bit confidence is 0 none/not determined, 1 low, 2 medium,
3 high):

* ``landsat_c2_qa_pixel`` — Landsat Collection 2 ``QA_PIXEL``: bit 0 fill, 1 dilated cloud, 2 cirrus (OLI),
  3 cloud, 4 cloud shadow, 5 snow, 6 clear, 7 water, bits 8-9 cloud confidence, 10-11 cloud-shadow confidence,
  12-13 snow/ice confidence, 14-15 cirrus confidence.
* ``landsat_pre_bqa`` — Landsat 8 pre-collection ``BQA``: bit 0 designated fill, 1 dropped frame, 2 terrain
  occlusion, bits 4-5 water, 10-11 snow/ice, 12-13 cirrus, 14-15 cloud confidence (here 1 means "no",
  2 "maybe", 3 "yes").
* ``s2_scl`` — Sentinel-2 L2A scene classification: 0 no data, 1 saturated/defective, 2 dark area / topographic
  shadow, 3 cloud shadow, 4 vegetation, 5 not vegetated, 6 water, 7 unclassified, 8 cloud medium probability,
  9 cloud high probability, 10 thin cirrus, 11 snow/ice.
* ``binary`` — any value other than 0 is masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geoseg.spec.job import QualityMaskSpec

CONFIDENCE = {"low": 1, "medium": 2, "high": 3}
"""Spec name of a 2-bit confidence level -> its value."""


def bit_field(qa: np.ndarray, start: int, count: int = 1) -> np.ndarray:
    """The unsigned integer held in ``count`` bits of ``qa`` starting at bit ``start``."""
    return (qa.astype(np.uint32) >> start) & ((1 << count) - 1)


@dataclass(frozen=True)
class QualityMask:
    """A decoded mask source: where the QA band is and which of its values mask a pixel."""

    paths: tuple[str, ...]
    band: int
    spec: QualityMaskSpec

    def masked(self, qa: np.ndarray) -> np.ndarray:
        """True where the QA values mask a pixel."""
        return masked_pixels(qa, self.spec)


def masked_pixels(qa: np.ndarray, spec: QualityMaskSpec) -> np.ndarray:
    """Decode a QA array by the spec's kind and rules; True = masked."""
    if spec.kind == "landsat_c2_qa_pixel":
        return _landsat_c2(qa, spec)
    if spec.kind == "landsat_pre_bqa":
        return _landsat_pre(qa, spec)
    if spec.kind == "s2_scl":
        return np.isin(qa, spec.scl_classes)
    return qa != 0


def _landsat_c2(qa: np.ndarray, spec: QualityMaskSpec) -> np.ndarray:
    level = CONFIDENCE[spec.min_confidence]
    masked = (bit_field(qa, 0) == 1) | (bit_field(qa, 3) == 1) | (bit_field(qa, 8, 2) >= level)
    if spec.dilated_cloud:
        masked |= bit_field(qa, 1) == 1
    if spec.cirrus:
        masked |= (bit_field(qa, 2) == 1) | (bit_field(qa, 14, 2) >= level)
    if spec.shadow:
        masked |= (bit_field(qa, 4) == 1) | (bit_field(qa, 10, 2) >= level)
    if spec.snow:
        masked |= (bit_field(qa, 5) == 1) | (bit_field(qa, 12, 2) >= level)
    return masked


def _landsat_pre(qa: np.ndarray, spec: QualityMaskSpec) -> np.ndarray:
    level = CONFIDENCE[spec.min_confidence]
    masked = (bit_field(qa, 0) == 1) | (bit_field(qa, 1) == 1) | (bit_field(qa, 2) == 1)
    masked |= bit_field(qa, 14, 2) >= level
    if spec.cirrus:
        masked |= bit_field(qa, 12, 2) >= level
    if spec.snow:
        masked |= bit_field(qa, 10, 2) >= level
    return masked


def cloud_confidence(qa: np.ndarray, kind: str) -> np.ndarray:
    """The 2-bit cloud confidence (0..3) of a Landsat QA array; for reports such as 'high-confidence cloud'."""
    if kind == "landsat_c2_qa_pixel":
        return bit_field(qa, 8, 2)
    if kind == "landsat_pre_bqa":
        return bit_field(qa, 14, 2)
    raise ValueError(f"{kind} has no cloud-confidence bits")
