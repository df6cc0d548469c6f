"""Per-object statistics in a mergeable form: each tile sums over the pixels it owns, objects add the sums up.

Everything here is a count or a sum, so the merged statistics of an object do not depend on how tiles cut it:

* pixels per health class, index sums and valid-pixel counts (means);
* fixed-bin index histograms over [-1, 1] (``HIST_BINS`` bins, 0.01 wide): medians and percentiles to a bin;
* masked pixels inside the object (its label covers pixels the crop-health model could not see: clouds, nodata);
* the object's outline in pixel sides, and how many of those sides face a masked pixel. Each side is counted by
  the tile that owns the pixel inside the object, looking one pixel into the halo: every side once, exactly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from geoseg.inputs.tiles import Tile

HIST_BINS = 200
"""Bins of the index histograms over [-1, 1] (0.01 wide) that give exact-to-a-bin quantiles of merged objects."""

_SIDES = ((-1, 0), (1, 0), (0, -1), (0, 1))


@dataclass
class StatsSource:
    """Per-pixel layers over the read window used for per-object statistics (from a crop-health model)."""

    classes: np.ndarray | None = None
    """Health classes over the read window; 0 = not observed (masked, nodata, outside the scene or AOI)."""
    n_classes: int = 0
    layers: dict[str, np.ndarray] = field(default_factory=dict)
    hist_layers: tuple[str, ...] = ()


class SummedStats(Protocol):
    """What a fragment carries for merging (see :class:`geoseg.stitch.stitcher.Fragment`)."""

    index_sums: dict[str, float]
    index_counts: dict[str, int]
    index_hists: dict[str, np.ndarray]


@dataclass
class LabelSums:
    """Per-label sums over a tile's core, each array indexed by label (what a tile's fragments carry)."""

    pixels: np.ndarray
    classes: np.ndarray | None = None
    """(labels, classes) pixel counts per health class (with a crop-health model)."""
    masked: np.ndarray | None = None
    """Pixels not observed (health class 0)."""
    edge_sides: np.ndarray | None = None
    """Pixel sides on the label's outline."""
    edge_masked: np.ndarray | None = None
    """Those of them facing a masked pixel."""
    index_sums: dict[str, np.ndarray] = field(default_factory=dict)
    index_counts: dict[str, np.ndarray] = field(default_factory=dict)
    index_hists: dict[str, np.ndarray] = field(default_factory=dict)


def label_sums(labels: np.ndarray, stats: StatsSource | None, tile: Tile) -> LabelSums:
    """Per-label sums over a tile's core: pixels, class counts, masked pixels, outline sides, index sums/histograms.

    Args:
        labels: label raster over the read window (halo >= 1).
        stats: the crop-health layers over the same window, if the job has a crop-health model.
        tile: the tile (gives the core).
    """
    core_labels = labels[tile.core_in_read]
    n = int(core_labels.max()) + 1 if core_labels.size else 1
    flat = core_labels.ravel()
    out = LabelSums(np.bincount(flat, minlength=n))
    if stats is None:
        return out
    if stats.classes is not None:
        classes = stats.classes[tile.core_in_read].ravel().astype(np.int64)
        counts = np.bincount(flat * stats.n_classes + classes, minlength=n * stats.n_classes)
        out.classes = counts.reshape(n, stats.n_classes)
        out.masked = np.bincount(flat[classes == 0], minlength=n)
        out.edge_sides, out.edge_masked = _outline_sides(labels, stats.classes > 0, tile, n)
    for name, layer in stats.layers.items():
        values = layer[tile.core_in_read].ravel()
        ok = ~np.isnan(values)
        seen, values = (flat, values) if ok.all() else (flat[ok], values[ok])
        out.index_sums[name] = np.bincount(seen, weights=values, minlength=n)
        out.index_counts[name] = np.bincount(seen, minlength=n)
        if name in stats.hist_layers:
            bins = np.clip(((values + 1.0) / 2.0 * HIST_BINS).astype(np.int64), 0, HIST_BINS - 1)
            hist = np.bincount(seen * HIST_BINS + bins, minlength=n * HIST_BINS)
            out.index_hists[name] = hist.reshape(n, HIST_BINS)
    return out


def _outline_sides(labels: np.ndarray, observed: np.ndarray, tile: Tile, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per label: pixel sides between a core pixel of the label and a pixel outside it; those facing masked pixels."""
    rows, cols = tile.core_in_read
    ring = (slice(rows.start - 1, rows.stop + 1), slice(cols.start - 1, cols.stop + 1))
    lab, obs = labels[ring], observed[ring]
    core = lab[1:-1, 1:-1]
    sides = np.zeros(n, np.int64)
    masked = np.zeros(n, np.int64)
    h, w = core.shape
    for dr, dc in _SIDES:
        neighbour = lab[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]
        edge = (core > 0) & (neighbour != core)
        sides += np.bincount(core[edge], minlength=n)
        masked += np.bincount(core[edge & ~obs[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]], minlength=n)
    return sides, masked


@dataclass
class IndexSummary:
    """Merged index statistics of one object."""

    means: dict[str, float]
    medians: dict[str, float]
    p10: dict[str, float]


def index_summary(frags: Iterable[SummedStats]) -> IndexSummary:
    """Means from summed values and counts; median and 10th percentile from summed histograms."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    hists: dict[str, np.ndarray] = {}
    for f in frags:
        for name, value in f.index_sums.items():
            sums[name] += value
            counts[name] += f.index_counts[name]
        for name, hist in f.index_hists.items():
            hists[name] = hists[name] + hist if name in hists else hist.copy()
    means = {name: sums[name] / counts[name] if counts[name] else float("nan") for name in sums}
    return IndexSummary(
        means,
        {name: hist_quantile(h, 0.5) for name, h in hists.items()},
        {name: hist_quantile(h, 0.1) for name, h in hists.items()},
    )


def hist_quantile(hist: np.ndarray, q: float) -> float:
    """The centre of the bin holding quantile ``q`` of a fixed-bin histogram over [-1, 1]; NaN when empty."""
    total = hist.sum()
    if total == 0:
        return float("nan")
    bin_index = int(np.searchsorted(np.cumsum(hist), total * q))
    return -1.0 + (bin_index + 0.5) * 2.0 / HIST_BINS
