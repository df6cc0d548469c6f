"""Vegetation indices as torch operations, so they run on the model actors on CPU or GPU.

Band names are the common ones: blue, green, red, rededge, nir, swir16 (Sentinel-2: B02, B03, B04, B05, B08, B11).
Every formula takes reflectance; a pixel whose denominator is 0 gets NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from geoseg.models.crop_health.catalog import INDEX_BANDS, INDEX_FORMULAS, bands_for

IndexFn = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return (num / den).masked_fill_(den == 0, float("nan"))


def _torch_formula(name: str) -> IndexFn:
    formula = INDEX_FORMULAS[name]
    return lambda bands: formula(bands, _ratio)


INDICES: dict[str, tuple[tuple[str, ...], IndexFn]] = {
    name: (INDEX_BANDS[name], _torch_formula(name)) for name in INDEX_FORMULAS
}
"""Index name -> (bands it needs, formula)."""


def compute_indices(
    stack: torch.Tensor, band_names: tuple[str, ...], indices: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Compute indices from a (N, C, H, W) reflectance stack whose channels are ``band_names``."""
    bands = {name: stack[:, i].float() for i, name in enumerate(band_names)}
    return {name: INDICES[name][1](bands) for name in indices}


__all__ = ["INDICES", "bands_for", "compute_indices"]
