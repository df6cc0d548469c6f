"""Blending overlapping semantic predictions (the merge-method table), without Ray."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.inputs.tiles import Tile, TileGrid
from geoseg.models.base import SemanticOutput
from geoseg.stitch.blend import MERGE_METHODS, blend_classes, contributors, linear_weights, ring_tile
from geoseg.stitch.stitcher import LayerStitcher, region_labels, tile_layer

VALUES = np.array([1, 2, 3], np.uint8)


def _scene_scores(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth class probabilities (3, h, w) that do not depend on any tile."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / 7.0
    logits = np.stack([np.sin(xx + rng.random() * 6) + rng.random() * yy / 3 for _ in range(3)])
    e = np.exp(logits)
    return (e / e.sum(axis=0)).astype(np.float32)


def _window(scores: np.ndarray, tile: Tile) -> np.ndarray:
    """A tile's view of scene-wide scores; zero (invalid) past the scene."""
    _, h, w = scores.shape
    size = int(tile.read.height)
    out = np.zeros((scores.shape[0], size, size), np.float32)
    r0, c0 = int(tile.read.row_off), int(tile.read.col_off)
    rs, cs, re_, ce = max(r0, 0), max(c0, 0), min(r0 + size, h), min(c0 + size, w)
    out[:, rs - r0 : re_ - r0, cs - c0 : ce - c0] = scores[:, rs:re_, cs:ce]
    return out


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(10, 50), w=st.integers(10, 50), tile_size=st.integers(4, 30), halo=st.integers(1, 8),
    seed=st.integers(0, 1000), method=st.sampled_from(sorted(MERGE_METHODS)),
)  # fmt: skip
def test_consistent_predictions_blend_to_the_scene_answer(h, w, tile_size, halo, seed, method):
    """When every tile sees the same probabilities, blending changes nothing and regions stitch exactly."""
    scores = _scene_scores(h, w, seed)
    truth_classes = VALUES[np.argmax(scores, axis=0)]
    grid = TileGrid(w, h, tile_size, halo)
    stitcher = LayerStitcher(grid)
    for tile in grid:
        classes = blend_classes(tile, grid, lambda t: _window(scores, t), method, VALUES)
        ring = ring_tile(tile)
        rows, cols = ring.core_in_read
        core = truth_classes[tile.core.row_off : tile.core.row_off + tile.core.height,
                             tile.core.col_off : tile.core.col_off + tile.core.width]  # fmt: skip
        np.testing.assert_array_equal(classes[rows, cols], core)
        layer, _ = tile_layer(SemanticOutput(classes), ring)
        stitcher.add(tile, layer)
    truth, _ = region_labels(truth_classes)
    assert len(stitcher.objects()) == truth.max()


def test_linear_weights_shift_the_seam_towards_the_less_reliable_side():
    """Tile A says class 1 (0.6 vs 0.4), tile B class 2 (0.3 vs 0.7) over the same ground.

    Mean blending hands the whole overlap to B (0.45 < 0.55). Linear weights trust each tile less near its read
    window's edge: a pixel of A's core at distance d from the shared edge stays A's while w_B < 0.5, i.e. for
    d >= halo / 2.
    """
    halo = 8
    grid = TileGrid(64, 32, 32, halo)
    a, b = grid[0, 0], grid[0, 1]
    size = grid.read_size

    def scores(tile: Tile) -> np.ndarray:
        p = np.array([0.6, 0.4, 0.0] if tile.col == 0 else [0.3, 0.7, 0.0], np.float32)
        return np.broadcast_to(p[:, None, None], (3, size, size)).copy()

    linear = blend_classes(a, grid, scores, "linear", VALUES)[1:-1, 1:-1][0]  # one row of A's core
    mean = blend_classes(a, grid, scores, "mean", VALUES)[1:-1, 1:-1][0]
    distance = 31 - np.arange(32)  # from the shared edge, inside A
    assert (mean[distance < halo] == 2).all() and (mean[distance >= halo] == 1).all()
    assert (linear[distance < halo // 2] == 2).all() and (linear[distance >= halo // 2] == 1).all()
    assert b in contributors(a, grid) and grid[0, 0] in contributors(b, grid)


def test_linear_weights_profile():
    w = linear_weights(12, 4)
    np.testing.assert_allclose(w[6, :4], [0.125, 0.375, 0.625, 0.875])
    assert (w[4:8, 4:8] == 1).all() and w[0, 0] == pytest.approx(0.125)
