"""Spectral crop health: vegetation indices -> health classes, no weights needed; torch, for GPUs (on the CPU the
builder gives the numpy twin in :mod:`geoseg.models.crop_health.cpu`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from geoseg.models.base import Model, ModelOutput, SceneInfo, SemanticOutput, TileContext
from geoseg.models.crop_health.catalog import HEALTH_CLASSES, bands_for
from geoseg.models.crop_health.cpu import class_bounds
from geoseg.models.crop_health.indices import compute_indices
from geoseg.spec.job import CropHealthSpec


class HealthClassifier(nn.Module):
    """Bins an index into health classes 1..4 by ascending thresholds; 0 where invalid or NaN."""

    edges: torch.Tensor

    def __init__(self, thresholds: tuple[float, float, float]) -> None:
        super().__init__()
        self.register_buffer("edges", torch.tensor(thresholds, dtype=torch.float32))

    def forward(self, index: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        classes = (torch.bucketize(index.contiguous(), self.edges, out_int32=True, right=True) + 1).to(torch.uint8)
        return classes.masked_fill_(~valid | torch.isnan(index), 0)


def majority_filter(classes: torch.Tensor, radius: int, n_classes: int) -> torch.Tensor:
    """Most frequent class in a (2r+1)² window, ignoring class 0 (nodata stays nodata); ties go to the lower class."""
    if radius == 0:
        return classes
    best, smoothed = _box_sum(classes == 1, radius), torch.ones_like(classes)
    for value in range(2, n_classes + 1):
        count = _box_sum(classes == value, radius)
        smoothed.masked_fill_(count > best, value)
        best = torch.maximum(best, count)
    return torch.where(classes > 0, smoothed, classes)


def _box_sum(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Pixels set in each (2r+1)² window of a (N, H, W) mask (zeros past the edges), as shifted sums."""
    h, w = mask.shape[-2:]
    padded = torch.nn.functional.pad(mask.float(), (radius, radius, radius, radius))
    rows = sum(padded[:, i : i + h] for i in range(1, 2 * radius + 1))
    rows = padded[:, :h] + rows
    cols = sum(rows[..., j : j + w] for j in range(1, 2 * radius + 1))
    return rows[..., :w] + cols


class CropHealthModel(Model):
    """Vegetation indices and health classes per pixel."""

    kind = "semantic"
    classes = HEALTH_CLASSES

    def __init__(self, spec: CropHealthSpec, scene: SceneInfo, device: str = "cpu") -> None:
        self.name = spec.name
        self.indices = spec.all_indices
        self.classify_by = spec.classify_by
        self.bands = bands_for(self.indices)
        self.device = torch.device(device)
        self.smoothing_px = spec.smoothing_px
        self.classifier = HealthClassifier(class_bounds(spec, scene)).to(self.device)

    @torch.inference_mode()
    def predict(self, pixels: np.ndarray, valid: np.ndarray, contexts: list[TileContext]) -> list[ModelOutput]:
        stack = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
        mask = torch.from_numpy(np.ascontiguousarray(valid)).to(self.device)
        values = compute_indices(stack, self.bands, self.indices)
        classes = self.classifier(values[self.classify_by], mask)
        classes = majority_filter(classes, self.smoothing_px, len(HEALTH_CLASSES)).cpu().numpy()
        invalid = ~mask
        layers = {name: v.masked_fill_(invalid, torch.nan).cpu().numpy() for name, v in values.items()}  # float32
        return [
            SemanticOutput(classes[i], {name: layer[i] for name, layer in layers.items()}) for i in range(len(contexts))
        ]


__all__ = ["CropHealthModel", "HealthClassifier", "class_bounds", "majority_filter"]
