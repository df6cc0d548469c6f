"""Split a region that holds two kinds of cover: a bare field beside a green one, joined where their lane ends.

The line filter finds a lane or a sharp step; a soft step (the colour ramps over 3-5 px, as where a bare and a green
field meet without a lane) can stay below it, and the calm area of one field then runs on into the next. Such a
region has two clear NDVI modes in two solid blocks. A region is split when its NDVI, cut in two by Otsu's
threshold, is

- **far apart**: the two parts' mean NDVI differ by at least ``step`` (a bare field ~0.2-0.35, a green one
  ~0.6; the streaks and patches inside one field differ less);
- **two modes, not a spread**: the split explains at least ``bimodality`` of the NDVI variance (Otsu's
  separability: ~0.64 for one Gaussian mode, 0.75 for an even spread, close to 1 for two blocks of one value each);
- **a short ramp**: where the two parts meet, NDVI climbs the step between their means within ``ramp_px``
  pixels (the step over the mean NDVI gradient along their border): one crop growing unevenly across a field
  ramps over tens of pixels, two fields side by side over a few;
- **in solid blocks**: each part, eroded by :data:`SOLID_PX` pixels, keeps a piece of at least ``min_px`` pixels
  (not a sliver of the ramp along a field's side).

The parts' solid pieces then seed a watershed of the NDVI gradient inside the region, so the cut follows the
middle of the ramp.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed

from geoseg.models.fields.edges import FOUR_CONNECTED

SOLID_PX = 3
"""Erosion (px) of each NDVI part before its pieces are counted: a part under 7 px wide is the ramp's side along a
boundary the line filters already drew, not a field (2 px cut such slivers; the benchmarks score alike)."""


@dataclass(frozen=True)
class SplitRule:
    """When a region holds two fields: see the module docstring."""

    step: float
    bimodality: float
    ramp_px: float
    min_px: int


def split_mixed_cover(labels: np.ndarray, ndvi: np.ndarray, rule: SplitRule) -> np.ndarray:
    """``labels`` (int32, 0 = none) with each region of two NDVI blocks split in pieces; new pieces get new labels."""
    out = labels.copy()
    gradient = np.hypot(*np.gradient(ndvi))
    next_label = int(labels.max()) + 1
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        inside = labels[box] == index
        if inside.sum() < 2 * rule.min_px:
            continue
        cores = _solid_parts(inside, ndvi[box], gradient[box], rule)
        if cores is None:
            continue
        pieces = watershed(gradient[box], cores, mask=inside)
        for piece in range(2, int(pieces.max()) + 1):
            out[box][pieces == piece] = next_label
            next_label += 1
    return out


def _solid_parts(inside: np.ndarray, ndvi: np.ndarray, gradient: np.ndarray, rule: SplitRule) -> np.ndarray | None:
    """Markers (1..k) of the solid pieces of a region's two NDVI parts, or None when it is one field."""
    values = ndvi[inside]
    if np.ptp(values) < rule.step:
        return None
    threshold = threshold_otsu(values)
    low, high = inside & (ndvi < threshold), inside & (ndvi >= threshold)
    step = ndvi[high].mean() - ndvi[low].mean()
    if step < rule.step:
        return None
    if low.sum() * high.sum() / values.size**2 * step**2 < rule.bimodality * values.var():
        return None
    border = low & ndimage.binary_dilation(high, FOUR_CONNECTED)
    if step > rule.ramp_px * gradient[border].mean():
        return None
    markers = np.zeros(inside.shape, np.int32)
    count = 0
    for part in (low, high):
        solid, found = ndimage.label(ndimage.binary_erosion(part, FOUR_CONNECTED, iterations=SOLID_PX), FOUR_CONNECTED)
        sizes = np.bincount(solid.ravel(), minlength=found + 1)
        big = np.flatnonzero(sizes[1:] >= rule.min_px) + 1
        if big.size == 0:
            return None
        for piece in big:
            count += 1
            markers[solid == piece] = count
    return markers
