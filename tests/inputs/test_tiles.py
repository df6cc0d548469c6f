"""Tests of geoseg.inputs.tiles: the tile grid's invariants, as properties over random grids."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.inputs.tiles import Tile, TileGrid

grids = st.builds(
    TileGrid,
    width=st.integers(1, 300),
    height=st.integers(1, 300),
    tile_size=st.integers(1, 128),
    halo=st.integers(0, 40),
).filter(lambda g: len(g) <= 400)
"""Random grids, from one pixel to a few hundred tiles."""

SETTINGS = settings(max_examples=60, deadline=None)


@SETTINGS
@given(grids)
def test_cores_cover_every_pixel_exactly_once(grid):
    paint = np.zeros((grid.height, grid.width), np.int32)
    for tile in grid:
        c = tile.core
        assert c.col_off >= 0 and c.row_off >= 0 and c.width >= 1 and c.height >= 1
        paint[c.row_off : c.row_off + c.height, c.col_off : c.col_off + c.width] += 1
    assert (paint == 1).all()


@SETTINGS
@given(grids)
def test_read_windows_are_core_plus_halo_of_constant_size(grid):
    for tile in grid:
        assert (tile.read.width, tile.read.height) == (grid.read_size, grid.read_size)
        assert grid.read_size == grid.tile_size + 2 * grid.halo
        # the read window starts one halo before the core, and a full core ends one halo before it
        assert tile.read.col_off == tile.core.col_off - grid.halo
        assert tile.read.row_off == tile.core.row_off - grid.halo
        assert tile.read.col_off + tile.read.width >= tile.core.col_off + tile.core.width + grid.halo
        assert tile.read.row_off + tile.read.height >= tile.core.row_off + tile.core.height + grid.halo


@SETTINGS
@given(grids)
def test_core_in_read_cuts_the_core_out_of_a_read_array(grid):
    # a scene whose value at each pixel is its own (row, col); a read array is the scene padded by the halo
    rows, cols = np.mgrid[0 : grid.height, 0 : grid.width]
    scene = rows * 1000 + cols
    pad = grid.halo + grid.tile_size
    padded = np.pad(scene, pad, constant_values=-1)
    for tile in grid:
        r0, c0 = tile.read.row_off + pad, tile.read.col_off + pad
        read = padded[r0 : r0 + grid.read_size, c0 : c0 + grid.read_size]
        assert read.shape == (grid.read_size, grid.read_size)
        core = tile.core
        expected = scene[core.row_off : core.row_off + core.height, core.col_off : core.col_off + core.width]
        np.testing.assert_array_equal(read[tile.core_in_read], expected)


@SETTINGS
@given(grids)
def test_only_the_last_row_and_column_are_smaller(grid):
    rows, cols = grid.shape
    assert rows == -(-grid.height // grid.tile_size) and cols == -(-grid.width // grid.tile_size)
    assert len(grid) == rows * cols == len(list(grid))
    for tile in grid:
        full_w = tile.col < cols - 1 or grid.width % grid.tile_size == 0
        full_h = tile.row < rows - 1 or grid.height % grid.tile_size == 0
        assert tile.core.width == (grid.tile_size if full_w else grid.width % grid.tile_size)
        assert tile.core.height == (grid.tile_size if full_h else grid.height % grid.tile_size)


@SETTINGS
@given(grids)
def test_neighbours_are_right_and_bottom_each_edge_once(grid):
    edges = []
    for tile in grid:
        for side, other in grid.neighbours(tile):
            if side == "right":
                assert (other.row, other.col) == (tile.row, tile.col + 1)
                assert other.core.col_off == tile.core.col_off + tile.core.width
            else:
                assert side == "bottom"
                assert (other.row, other.col) == (tile.row + 1, tile.col)
                assert other.core.row_off == tile.core.row_off + tile.core.height
            edges.append(frozenset({tile.id, other.id}))
    rows, cols = grid.shape
    assert len(edges) == len(set(edges)) == rows * (cols - 1) + cols * (rows - 1)


@SETTINGS
@given(grids, st.data())
def test_tiles_survive_pickling(grid, data):
    row = data.draw(st.integers(0, grid.shape[0] - 1))
    col = data.draw(st.integers(0, grid.shape[1] - 1))
    tile = grid[row, col]
    copy = pickle.loads(pickle.dumps(tile))
    assert copy == tile and hash(copy) == hash(tile)
    assert {tile: "x"}[copy] == "x"
    assert pickle.loads(pickle.dumps(grid)) == grid


def test_index_out_of_range():
    grid = TileGrid(100, 50, 32, 4)
    assert grid.shape == (2, 4)
    for index in [(2, 0), (0, 4), (-1, 0), (0, -1)]:
        with pytest.raises(IndexError, match="outside grid"):
            grid[index]


@pytest.mark.parametrize(("width", "height", "tile_size", "halo"), [(0, 10, 4, 1), (10, 10, 0, 1), (10, 10, 4, -1)])
def test_invalid_grid(width, height, tile_size, halo):
    with pytest.raises(ValueError, match="invalid tile grid"):
        TileGrid(width, height, tile_size, halo)


def test_tile_ids_and_transforms():
    grid = TileGrid(100, 100, 40, 8)
    tile = grid[1, 2]
    assert isinstance(tile, Tile)
    assert tile.id == "r0001_c0002"
    scene = Affine(10, 0, 500_000, 0, -10, 5_000_000)
    assert tile.core_transform(scene) @ (0, 0) == (500_000 + 80 * 10, 5_000_000 - 40 * 10)
    assert tile.read_transform(scene) @ (0, 0) == (500_000 + 72 * 10, 5_000_000 - 32 * 10)
    assert tile.read_transform(scene) @ (8, 8) == tile.core_transform(scene) @ (0, 0)
