"""Classical field segmenter (no weights): vegetated regions, split along thin boundaries.

Pixels whose index reaches a threshold are eroded by ``erode_px`` (cutting the narrow strips of road, hedge or
bare soil between fields), labelled into 4-connected regions, and grown back by ``erode_px`` inside the vegetated
mask. Every step is local (receptive field ``2 * erode_px``) except the labelling, which the stitcher completes
across tiles exactly; so with ``halo >= 2 * erode_px`` the result does not depend on the tile size.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from skimage.segmentation import expand_labels

from geoseg.models.base import InstanceInfo, InstanceOutput, Model, ModelOutput, SceneInfo, TileContext
from geoseg.models.crop_health.catalog import bands_for
from geoseg.models.crop_health.indices import compute_indices
from geoseg.spec.job import FieldRegionsSpec

_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


class FieldRegionsModel(Model):
    """Connected regions of vegetated pixels, one instance each."""

    kind = "instance"
    merge_min_agreement = 0.0

    def __init__(self, spec: FieldRegionsSpec) -> None:
        self.name = spec.name
        self.index = spec.index
        self.threshold = spec.threshold
        self.erode_px = spec.erode_px
        self.bands = bands_for([spec.index])

    def predict(self, pixels: np.ndarray, valid: np.ndarray, contexts: list[TileContext]) -> list[ModelOutput]:
        index = compute_indices(torch.from_numpy(np.ascontiguousarray(pixels)), self.bands, [self.index])[self.index]
        vegetated = (index.numpy() >= self.threshold) & valid
        return [self._segment(mask) for mask in vegetated]

    def _segment(self, vegetated: np.ndarray) -> InstanceOutput:
        seeds = vegetated
        if self.erode_px:
            seeds = ndimage.binary_erosion(vegetated, _FOUR_CONNECTED, iterations=self.erode_px)
        labels, count = ndimage.label(seeds, _FOUR_CONNECTED)
        if self.erode_px:
            labels = np.where(vegetated, expand_labels(labels, self.erode_px), 0)
        infos = [InstanceInfo(label=i, score=1.0) for i in range(1, count + 1)]
        return InstanceOutput(labels.astype(np.int32), infos)


def build_field_regions(spec: FieldRegionsSpec, scene: SceneInfo, device: str) -> FieldRegionsModel:
    """Builder used by the model registry."""
    return FieldRegionsModel(spec)
