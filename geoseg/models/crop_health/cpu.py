"""Spectral crop health on the CPU in numpy, without torch: the same indices, classes and smoothing as
:mod:`geoseg.models.crop_health.model` (which runs them on a GPU), so a CPU worker never imports torch for it."""

from __future__ import annotations

import numpy as np

from geoseg.models.base import Model, ModelOutput, SceneInfo, SemanticOutput, TileContext
from geoseg.models.crop_health.catalog import HEALTH_CLASSES, bands_for, index_array
from geoseg.spec.job import CropHealthSpec


def class_bounds(spec: CropHealthSpec, scene: SceneInfo) -> tuple[float, float, float]:
    """Upper bounds of non_vegetation, stressed, moderate: absolute thresholds, or the scene's index percentiles."""
    if spec.classes_by == "thresholds" or (spec.classes_by == "auto" and scene.reflectance):
        t = spec.thresholds
        return t.non_vegetation, t.stressed, t.moderate
    table = scene.index_percentiles[spec.classify_by]
    p = spec.percentiles
    return tuple(float(np.interp(q, np.arange(101), table)) for q in (p.non_vegetation, p.stressed, p.moderate))  # type: ignore[return-value]


def classify(index: np.ndarray, valid: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Classes 1..4 by ascending float32 ``edges`` (a value on an edge goes up); 0 where invalid or NaN."""
    classes = np.ones(index.shape, np.uint8)
    for edge in edges:  # a few comparisons: several times faster than a searchsorted over every pixel
        classes += index >= edge
    classes[~valid | np.isnan(index)] = 0
    return classes


def majority_filter(classes: np.ndarray, radius: int, n_classes: int) -> np.ndarray:
    """Most frequent class in a (2r+1)² window, ignoring class 0 (nodata stays nodata); ties go to the lower class."""
    if radius == 0:
        return classes
    best, smoothed = _box_sum(classes == 1, radius), np.ones_like(classes)
    for value in range(2, n_classes + 1):
        count = _box_sum(classes == value, radius)
        smoothed[count > best] = value
        np.maximum(best, count, out=best)
    return np.where(classes > 0, smoothed, classes)


def _box_sum(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels set in each (2r+1)² window of a (N, H, W) mask (zeros past the edges), as shifted sums."""
    h, w = mask.shape[-2:]
    padded = np.pad(mask.astype(np.int16), ((0, 0), (radius, radius), (radius, radius)))
    rows = padded[:, :h].copy()
    for i in range(1, 2 * radius + 1):
        rows += padded[:, i : i + h]
    cols = rows[..., :w].copy()
    for j in range(1, 2 * radius + 1):
        cols += rows[..., j : j + w]
    return cols


class CropHealthCpuModel(Model):
    """Vegetation indices and health classes per pixel, in numpy."""

    kind = "semantic"
    classes = HEALTH_CLASSES

    def __init__(self, spec: CropHealthSpec, scene: SceneInfo) -> None:
        self.name = spec.name
        self.indices = spec.all_indices
        self.classify_by = spec.classify_by
        self.bands = bands_for(self.indices)
        self.smoothing_px = spec.smoothing_px
        self.edges = np.asarray(class_bounds(spec, scene), np.float32)

    def predict(self, pixels: np.ndarray, valid: np.ndarray, contexts: list[TileContext]) -> list[ModelOutput]:
        bands = {name: pixels[:, i] for i, name in enumerate(self.bands)}
        values = {name: index_array(name, bands) for name in self.indices}
        classes = classify(values[self.classify_by], valid, self.edges)
        classes = majority_filter(classes, self.smoothing_px, len(HEALTH_CLASSES))
        invalid = ~valid
        for layer in values.values():
            layer[invalid] = np.nan
        return [
            SemanticOutput(classes[i], {name: layer[i] for name, layer in values.items()}) for i in range(len(contexts))
        ]


def build_crop_health(spec: CropHealthSpec, scene: SceneInfo, device: str) -> Model:
    """Builder used by the model registry: numpy on the CPU, torch (:mod:`geoseg.models.crop_health.model`) on a GPU."""
    if device == "cpu":
        return CropHealthCpuModel(spec, scene)
    from geoseg.models.crop_health.model import CropHealthModel

    return CropHealthModel(spec, scene, device)
