"""Stitching as properties: for any tile size and halo, objects equal the whole-scene answer."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from geoseg.inputs.tiles import Tile, TileGrid
from geoseg.models.base import InstanceInfo, InstanceOutput, SemanticOutput
from geoseg.stitch.fieldstats import hist_quantile
from geoseg.stitch.mergesets import UnionFind
from geoseg.stitch.stitcher import (
    EdgeStrips,
    LayerStitcher,
    StatsSource,
    edge_matches,
    region_labels,
    tile_layer,
)


def _window(a: np.ndarray, tile: Tile) -> np.ndarray:
    """A read window of ``a``, zero past the scene."""
    h, w = a.shape
    out = np.zeros((int(tile.read.height), int(tile.read.width)), a.dtype)
    r0, c0 = int(tile.read.row_off), int(tile.read.col_off)
    rs, cs, re_, ce = max(r0, 0), max(c0, 0), min(r0 + out.shape[0], h), min(c0 + out.shape[1], w)
    out[rs - r0 : re_ - r0, cs - c0 : ce - c0] = a[rs:re_, cs:ce]
    return out


def _stitch(classes: np.ndarray, tile_size: int, halo: int, stats: bool = False):
    grid = TileGrid(classes.shape[1], classes.shape[0], tile_size, halo)
    stitcher = LayerStitcher(grid)
    for tile in grid:
        window = _window(classes, tile)
        source = StatsSource(layers={"v": window.astype(np.float32) / 10}) if stats else None
        layer, core = tile_layer(SemanticOutput(window), tile, source)
        np.testing.assert_array_equal(core, classes[tile.core.row_off : tile.core.row_off + core.shape[0],
                                                   tile.core.col_off : tile.core.col_off + core.shape[1]])  # fmt: skip
        stitcher.add(tile, layer)
    return stitcher.objects()


def _pixel_sets(labels: np.ndarray) -> set[frozenset[int]]:
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(1, flat.max() + 2))
    return {frozenset(order[bounds[i] : bounds[i + 1]].tolist()) for i in range(flat.max())}


def _objects_as_pixel_sets(objects, shape: tuple[int, int]) -> set[frozenset[int]]:
    import rasterio.features

    out = set()
    for obj in objects:
        mask = rasterio.features.geometry_mask([obj.geometry], shape, rasterio.Affine.identity(), invert=True)
        out.add(frozenset(np.flatnonzero(mask).tolist()))
    return out


@st.composite
def class_scenes(draw):
    h, w = draw(st.integers(5, 60)), draw(st.integers(5, 60))
    seed = draw(st.integers(0, 2**31))
    n_classes = draw(st.integers(1, 3))
    rng = np.random.default_rng(seed)
    smooth = ndimage.uniform_filter(rng.random((h, w)), 3)
    classes = np.digitize(smooth, np.quantile(smooth, np.linspace(0, 1, n_classes + 1)[1:-1])).astype(np.uint8) + 1
    classes[rng.random((h, w)) < draw(st.floats(0, 0.2))] = 0  # nodata holes
    return classes


@settings(max_examples=60, deadline=None)
@given(classes=class_scenes(), tile_size=st.integers(3, 40), halo=st.integers(1, 5))
def test_regions_equal_whole_scene_labelling(classes, tile_size, halo):
    objects = _stitch(classes, tile_size, halo)
    truth, _ = region_labels(classes)
    assert len(objects) == truth.max()
    assert _objects_as_pixel_sets(objects, classes.shape) == _pixel_sets(truth)
    assert sum(o.pixels for o in objects) == int((classes > 0).sum())  # every pixel in exactly one object
    assert all(o.geometry.is_valid for o in objects)


def test_object_ids_and_statistics_do_not_depend_on_tile_size():
    rng = np.random.default_rng(1)
    classes = (ndimage.uniform_filter(rng.random((80, 90)), 5) > 0.5).astype(np.uint8) + 1
    runs = [_stitch(classes, size, 2, stats=True) for size in (7, 16, 100)]
    for objects in runs[1:]:
        assert [(o.id, o.cls, o.pixels) for o in objects] == [(o.id, o.cls, o.pixels) for o in runs[0]]
        for a, b in zip(objects, runs[0], strict=True):
            assert a.geometry.equals(b.geometry)
            assert a.index_means["v"] == pytest.approx(b.index_means["v"])


def _strips(inside: dict[str, list[int]], outside: dict[str, list[int]]) -> EdgeStrips:
    return EdgeStrips({k: np.array(v) for k, v in inside.items()}, {k: np.array(v) for k, v in outside.items()})


def test_edge_matches_compares_the_same_pixels_from_both_sides():
    a = _strips({"right": [1, 1, 2, 0]}, {"right": [1, 1, 0, 0]})  # A sees its label 1 in B's first column
    b = _strips({"left": [5, 5, 6, 6]}, {"left": [7, 7, 0, 0]})
    assert sorted(edge_matches(a, b, "right")) == [(1, 5), (1, 7)]
    # with a required agreement, the weak pair (a single pixel) is dropped
    assert edge_matches(a, b, "right", min_agreement=0.5) == [(1, 5), (1, 7)]
    c = _strips({"right": [1, 0, 0, 0]}, {"right": [0, 0, 0, 0]})
    d = _strips({"left": [0, 0, 0, 0]}, {"left": [9, 9, 9, 9]})
    assert edge_matches(c, d, "right") == [(1, 9)]
    assert edge_matches(c, d, "right", min_agreement=0.5) == [(1, 9)]  # 1 vote of min(1, 4) pixels
    assert edge_matches(c, d, "right", min_agreement=1.0) == [(1, 9)]


def test_instances_with_a_key_merge_by_key_only():
    """Two prompts' masks touching at a tile edge stay two objects; one prompt seen in two tiles is one."""
    grid = TileGrid(20, 10, 10, 2)
    stitcher = LayerStitcher(grid, min_agreement=0.0)
    for tile in grid:
        labels = np.zeros((14, 14), np.int32)
        labels[2:12, 2:14] = 1  # prompt "a" fills this tile's core and reaches across the edge
        info = InstanceInfo(1, 0.9, key="a" if tile.col == 0 else "b")
        layer, _ = tile_layer(InstanceOutput(labels, [info]), tile)
        stitcher.add(tile, layer)
    assert sorted(o.key for o in stitcher.objects()) == ["a", "b"]


def test_union_find_and_histogram_median():
    uf = UnionFind()
    uf.union(1, 2)
    uf.union(3, 4)
    uf.union(2, 4)
    assert len({uf.find(i) for i in range(1, 6)}) == 2
    hist = np.zeros(200, np.int64)
    hist[150] = 3  # values in [0.50, 0.51)
    hist[10] = 1
    assert hist_quantile(hist, 0.5) == pytest.approx(0.505)
    assert np.isnan(hist_quantile(np.zeros(200), 0.5))


def test_fragments_are_in_integer_pixel_coordinates():
    grid = TileGrid(12, 12, 6, 1)
    tile = grid[1, 1]
    labels = np.zeros((8, 8), np.int32)
    labels[1:7, 1:7] = 3
    layer, _ = tile_layer(InstanceOutput(labels, [InstanceInfo(3, 0.5)]), tile)
    geom = shapely.from_wkb(layer.fragments[0].geometry)
    assert geom.equals(shapely.box(6, 6, 12, 12))
    assert layer.fragments[0].pixels == 36 and layer.fragments[0].score_sum == pytest.approx(18.0)


def _layers(classes: np.ndarray, grid: TileGrid) -> list[tuple[Tile, object]]:
    return [(tile, tile_layer(SemanticOutput(_window(classes, tile)), tile)[0]) for tile in grid]


@settings(max_examples=40, deadline=None)
@given(classes=class_scenes(), tile_size=st.integers(3, 20), halo=st.integers(1, 3), seed=st.integers(0, 2**31))
def test_objects_do_not_depend_on_the_order_tiles_finish(classes, tile_size, halo, seed):
    grid = TileGrid(classes.shape[1], classes.shape[0], tile_size, halo)
    layers = _layers(classes, grid)
    in_order = LayerStitcher(grid)
    for tile, layer in layers:
        in_order.add(tile, layer)
    shuffled = LayerStitcher(grid)
    for i in np.random.default_rng(seed).permutation(len(layers)):
        shuffled.add(*layers[i])
    a, b = in_order.objects(), shuffled.objects()
    assert [(o.id, o.cls, o.pixels, o.fragments) for o in a] == [(o.id, o.cls, o.pixels, o.fragments) for o in b]
    assert all(x.geometry.equals(y.geometry) for x, y in zip(a, b, strict=True))


def test_final_objects_leave_the_stitcher_as_tiles_finish():
    """Small objects inside one tile go as soon as their tile and its neighbours are done; an object spanning
    every tile row stays held until its last tile finishes, then comes out once and whole."""
    classes = np.zeros((80, 80), np.uint8)
    classes[2:78, 32:36] = 1  # one long object crossing every tile row (tiles of 10 px)
    for r in range(3, 80, 10):
        for c in (3, 13, 53, 63):
            classes[r : r + 4, c : c + 4] = 2  # 32 small objects, each inside one core
    grid = TileGrid(80, 80, 10, 2)
    emitted: list = []
    stitcher = LayerStitcher(grid, sink=SimpleNamespace(put=emitted.append))
    held = []
    for tile, layer in _layers(classes, grid):
        stitcher.add(tile, layer)
        held.append(stitcher.held_fragments)
    per_row = grid.shape[1]
    # each small object goes when its tile is added (it touches no edge); the long object's fragments stay
    for row in range(grid.shape[0] - 1):
        assert held[(row + 1) * per_row - 1] == row + 1
    assert held[-1] == 0 and stitcher.held_fragments == 0
    long = [o for o in emitted if o.cls == 1]
    assert len(long) == 1 and len(long[0].fragments) == grid.shape[0]
    assert long[0].pixels == 76 * 4 and long[0].geometry.equals(shapely.box(32, 2, 36, 78))
    assert sorted(o.pixels for o in emitted if o.cls == 2) == [16] * 32


def test_objects_along_an_unfinished_neighbour_stay_held():
    classes = np.zeros((20, 20), np.uint8)
    classes[2:8, 8:12] = 1  # crosses the edge between tiles (0, 0) and (0, 1)
    grid = TileGrid(20, 20, 10, 2)
    emitted: list = []
    stitcher = LayerStitcher(grid, sink=SimpleNamespace(put=emitted.append))
    layers = dict((t.id, (t, layer)) for t, layer in _layers(classes, grid))
    stitcher.add(*layers["r0000_c0000"])
    assert stitcher.held_fragments == 1 and emitted == []
    stitcher.add(*layers["r0001_c0001"])
    stitcher.add(*layers["r0000_c0001"])
    assert stitcher.held_fragments == 0 and len(emitted) == 1 and emitted[0].pixels == 24
    assert "r0001_c0000" not in stitcher
    stitcher.close()
    assert len(emitted) == 1
