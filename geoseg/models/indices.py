"""Vegetation indices as torch operations, so they run on the model actors on CPU or GPU.

Band names are the common ones: blue, green, red, rededge, nir, swir16 (Sentinel-2: B02, B03, B04, B05, B08, B11).
Every formula takes reflectance; a pixel whose denominator is 0 gets NaN.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

IndexFn = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def _normalized_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    den = a + b
    return torch.where(den != 0, (a - b) / den, torch.full_like(den, float("nan")))


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den != 0, num / den, torch.full_like(den, float("nan")))


INDICES: dict[str, tuple[tuple[str, ...], IndexFn]] = {
    "ndvi": (("red", "nir"), lambda b: _normalized_difference(b["nir"], b["red"])),
    "ndre": (("rededge", "nir"), lambda b: _normalized_difference(b["nir"], b["rededge"])),
    "gndvi": (("green", "nir"), lambda b: _normalized_difference(b["nir"], b["green"])),
    "ndmi": (("nir", "swir16"), lambda b: _normalized_difference(b["nir"], b["swir16"])),
    "evi": (
        ("blue", "red", "nir"),
        lambda b: _ratio(2.5 * (b["nir"] - b["red"]), b["nir"] + 6.0 * b["red"] - 7.5 * b["blue"] + 1.0),
    ),
    "savi": (("red", "nir"), lambda b: _ratio(1.5 * (b["nir"] - b["red"]), b["nir"] + b["red"] + 0.5)),
}
"""Index name -> (bands it needs, formula)."""


def bands_for(indices: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Band names needed by some indices, in a stable order."""
    needed: list[str] = []
    for name in indices:
        needed.extend(b for b in INDICES[name][0] if b not in needed)
    return tuple(needed)


def compute_indices(stack: torch.Tensor, band_names: tuple[str, ...], indices: list[str]) -> dict[str, torch.Tensor]:
    """Compute indices from a (N, C, H, W) reflectance stack whose channels are ``band_names``."""
    bands = {name: stack[:, i].float() for i, name in enumerate(band_names)}
    return {name: INDICES[name][1](bands) for name in indices}
