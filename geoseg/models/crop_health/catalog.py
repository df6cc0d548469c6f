"""Torch-free facts about the models: health classes and which bands each vegetation index needs.

The driver (planning, stitching, export) reads these without importing torch; only the model actors do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from geoseg.models.base import ClassInfo

HEALTH_CLASSES = (
    ClassInfo(1, "non_vegetation", (166, 140, 110, 255)),
    ClassInfo(2, "stressed", (215, 48, 39, 255)),
    ClassInfo(3, "moderate", (254, 224, 80, 255)),
    ClassInfo(4, "healthy", (26, 152, 80, 255)),
)
"""Crop-health class values in the class raster (0 = nodata)."""

INDEX_BANDS: dict[str, tuple[str, ...]] = {
    "ndvi": ("red", "nir"),
    "ndre": ("rededge", "nir"),
    "gndvi": ("green", "nir"),
    "ndmi": ("nir", "swir16"),
    "evi": ("blue", "red", "nir"),
    "savi": ("red", "nir"),
}
"""Vegetation index -> the bands its formula reads."""


def bands_for(indices: Sequence[str]) -> tuple[str, ...]:
    """Band names needed by some indices, in a stable order."""
    needed: list[str] = []
    for name in indices:
        needed.extend(b for b in INDEX_BANDS[name] if b not in needed)
    return tuple(needed)


Ratio = Callable[[Any, Any], Any]
"""``ratio(num, den)``: num / den, NaN where den is 0 (numpy here, torch in
:mod:`geoseg.models.crop_health.indices`)."""

INDEX_FORMULAS: dict[str, Callable[[Mapping[str, Any], Ratio], Any]] = {
    "ndvi": lambda b, ratio: ratio(b["nir"] - b["red"], b["nir"] + b["red"]),
    "ndre": lambda b, ratio: ratio(b["nir"] - b["rededge"], b["nir"] + b["rededge"]),
    "gndvi": lambda b, ratio: ratio(b["nir"] - b["green"], b["nir"] + b["green"]),
    "ndmi": lambda b, ratio: ratio(b["nir"] - b["swir16"], b["nir"] + b["swir16"]),
    "evi": lambda b, ratio: ratio(2.5 * (b["nir"] - b["red"]), b["nir"] + 6.0 * b["red"] - 7.5 * b["blue"] + 1.0),
    "savi": lambda b, ratio: ratio(1.5 * (b["nir"] - b["red"]), b["nir"] + b["red"] + 0.5),
}
"""Vegetation index -> its formula over reflectance bands, written once for numpy and torch alike."""


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, num / den, np.nan)


def index_array(name: str, bands: dict[str, np.ndarray]) -> np.ndarray:
    """One vegetation index in numpy, for the driver (scene percentiles, quicklooks); the model actors use torch
    (:mod:`geoseg.models.crop_health.indices`) with the same formulas."""
    return np.asarray(INDEX_FORMULAS[name](bands, _ratio), np.float32)
