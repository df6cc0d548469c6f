"""Torch-free facts about the models: health classes and which bands each vegetation index needs.

The driver (planning, stitching, export) reads these without importing torch; only the model actors do.
"""

from __future__ import annotations

from collections.abc import Sequence

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
