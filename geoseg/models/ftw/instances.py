"""From FTW's per-pixel classes to field instances. Numpy and scikit-image only.

FTW's 3-class nets label each pixel background (0), field (1) or boundary (2). Fields are the 4-connected components
of field pixels (boundary pixels keep touching fields apart), components under ``min_px`` dropped; then each boundary
pixel within ``boundary_px`` of a field is given to the nearest field (ties: the lower label), so neighbouring fields
share the line between them instead of leaving a gap. 2-class nets have no boundary class: their fields are the
components alone.
"""

from __future__ import annotations

import numpy as np
from skimage import measure, segmentation

FIELD = 1
BOUNDARY = 2


def field_instances(
    classes: np.ndarray, valid: np.ndarray, boundary_px: int = 2, min_px: int = 4
) -> tuple[np.ndarray, int]:
    """Label the fields of a class raster.

    Args:
        classes: (H, W) FTW class indices (0 background, 1 field, 2 boundary).
        valid: (H, W) bool; invalid pixels belong to no field.
        boundary_px: boundary pixels at most this far (px, Euclidean) from a field join the nearest one.
        min_px: smaller field components are dropped.

    Returns:
        int32 (H, W) labels 1..n (0 = no field) and n.
    """
    labels, count = measure.label((classes == FIELD) & valid, connectivity=1, return_num=True)
    if min_px > 1 and count:
        keep = np.bincount(labels.ravel(), minlength=count + 1) >= min_px
        keep[0] = False
        renumber = np.zeros(count + 1, np.int64)
        renumber[keep] = np.arange(1, int(keep.sum()) + 1)
        labels, count = renumber[labels], int(keep.sum())
    if boundary_px > 0 and count:
        grown = segmentation.expand_labels(labels, distance=boundary_px)
        edge = (classes == BOUNDARY) & valid & (labels == 0)
        labels = np.where(edge, grown, labels)
    return labels.astype(np.int32), int(count)


def mean_per_label(labels: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    """Mean of ``values`` over each label 1..count (index 0 unused)."""
    flat = labels.ravel()
    sums = np.bincount(flat, weights=values.ravel().astype(np.float64), minlength=count + 1)
    sizes = np.bincount(flat, minlength=count + 1)
    return sums / np.maximum(sizes, 1)
