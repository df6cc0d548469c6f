"""Blending overlapping semantic predictions across tiles: the merge-method table.

Like rasterio's merge methods, each entry maps a name to a function with one signature; here the function gives
the weight of each pixel of a read window (``(size, halo) -> (size, size)`` array). A pixel's blended class
probabilities are the weighted mean over every tile whose read window holds it:

- ``core``: no blending; each tile keeps its core (exact when the halo covers the model's receptive field).
- ``mean``: every tile counts the same.
- ``linear``: weights fall linearly towards the read window's edge over the halo, so a tile's least reliable
  pixels (near its edge, with the least context) count least and seams fade out.

Blending needs the neighbours' predictions, so it is a second pass over the tiles' saved scores. Each tile blends
its core plus a one-pixel ring; the ring lets the stitcher match regions across core edges exactly as for any
other class raster. Every pixel is blended from the same tiles in the same order by whichever tile computes it,
so neighbours agree bit for bit on their shared pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from rasterio.windows import Window

from geoseg.inputs.tiles import Tile, TileGrid

WeightFn = Callable[[int, int], np.ndarray]


def mean_weights(size: int, halo: int) -> np.ndarray:
    """Every pixel of every tile counts the same."""
    return np.ones((size, size), np.float32)


def linear_weights(size: int, halo: int) -> np.ndarray:
    """Weights rise linearly from the read window's edge to 1 at ``halo`` pixels in (the core and beyond)."""
    ramp = np.minimum(np.arange(size) + 0.5, np.arange(size)[::-1] + 0.5) / max(halo, 1)
    edge = np.clip(ramp, 0.0, 1.0).astype(np.float32)
    return np.minimum.outer(edge, edge)


MERGE_METHODS: dict[str, WeightFn] = {"mean": mean_weights, "linear": linear_weights}
"""Blending methods by name; ``core`` (no blending) is the default and needs no entry."""


def ring_tile(tile: Tile) -> Tile:
    """The tile with its read window shrunk to the core plus a one-pixel ring (what a blend computes)."""
    core = tile.core
    return Tile(tile.row, tile.col, core, Window(core.col_off - 1, core.row_off - 1, core.width + 2, core.height + 2))


def contributors(tile: Tile, grid: TileGrid) -> list[Tile]:
    """Tiles whose read window overlaps the tile's core plus ring, in a fixed (row, col) order."""
    reach = -(-(grid.halo + 1) // grid.tile_size)
    rows, cols = grid.shape
    return [
        grid[r, c]
        for r in range(max(tile.row - reach, 0), min(tile.row + reach + 1, rows))
        for c in range(max(tile.col - reach, 0), min(tile.col + reach + 1, cols))
    ]


def blend_classes(
    tile: Tile,
    grid: TileGrid,
    load_scores: Callable[[Tile], np.ndarray | None],
    method: str,
    class_values: np.ndarray,
) -> np.ndarray:
    """Blended class raster over the tile's core plus a one-pixel ring (0 where no tile has a prediction).

    Args:
        tile: the tile to blend.
        grid: the tile grid.
        load_scores: a tile's saved (K, read, read) class probabilities, or None if it has none (failed, or
            outside the AOI); all-zero columns mark invalid pixels.
        method: a key of :data:`MERGE_METHODS`.
        class_values: class value of each score channel.
    """
    target = ring_tile(tile).read
    height, width = int(target.height), int(target.width)
    weights = MERGE_METHODS[method](grid.read_size, grid.halo)
    total: np.ndarray | None = None
    weight_sum = np.zeros((height, width), np.float64)
    for other in contributors(tile, grid):
        scores = load_scores(other)
        if scores is None:
            continue
        overlap = _overlap(target, other.read)
        if overlap is None:
            continue
        dst, src = overlap
        part = scores[(slice(None), *src)].astype(np.float64)
        w = weights[src] * (part.sum(axis=0) > 0)
        if total is None:
            total = np.zeros((scores.shape[0], height, width), np.float64)
        total[(slice(None), *dst)] += part * w
        weight_sum[dst] += w
    classes = np.zeros((height, width), np.uint8)
    if total is not None:
        has = weight_sum > 0
        classes[has] = class_values[np.argmax(total[:, has], axis=0)]
    return classes


def _overlap(target: Window, source: Window) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """Slices of the overlap of two windows in each one's own array coordinates."""
    r0 = max(target.row_off, source.row_off)
    c0 = max(target.col_off, source.col_off)
    r1 = min(target.row_off + target.height, source.row_off + source.height)
    c1 = min(target.col_off + target.width, source.col_off + source.width)
    if r1 <= r0 or c1 <= c0:
        return None
    dst = (
        slice(int(r0 - target.row_off), int(r1 - target.row_off)),
        slice(int(c0 - target.col_off), int(c1 - target.col_off)),
    )
    src = (
        slice(int(r0 - source.row_off), int(r1 - source.row_off)),
        slice(int(c0 - source.col_off), int(c1 - source.col_off)),
    )
    return dst, src
