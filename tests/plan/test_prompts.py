"""Prompt tables: any CRS onto the scene's pixel grid, keys and attributes, routing to tiles."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from pyproj import CRS, Transformer
from shapely.geometry import LineString, MultiPoint, Point, box

from geoseg.errors import InputError
from geoseg.inputs.tiles import TileGrid
from geoseg.plan.prompts import PromptTable

UTM = CRS.from_epsg(32633)
SCENE = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0)  # 10 m pixels, north-up
TO_WGS84 = Transformer.from_crs(UTM, 4326, always_xy=True)


def _lonlat(row: float, col: float) -> tuple[float, float]:
    x, y = SCENE @ (col, row)
    return TO_WGS84.transform(x, y)


def _write(tmp_path: Path, frame: gpd.GeoDataFrame, name: str) -> str:
    path = tmp_path / name
    if name.endswith(".parquet"):
        frame.to_parquet(path)
    else:
        frame.to_file(path)
    return str(path)


@pytest.fixture
def wgs84_prompts(tmp_path: Path) -> str:
    """Two points at pixel centres and one field polygon, given in EPSG:4326."""
    field_corners = [_lonlat(r, c) for r, c in ((100, 40), (100, 60), (130, 60), (130, 40))]
    frame = gpd.GeoDataFrame(
        {
            "id": [7, 8, 9],
            "crop": ["wheat", "maize", None],
            "yield_t": [6.5, float("nan"), 3.0],
        },
        geometry=[Point(_lonlat(10.5, 20.5)), Point(_lonlat(300.5, 450.5)), box(*MultiPoint(field_corners).bounds)],
        crs="EPSG:4326",
    )
    return _write(tmp_path, frame, "prompts.gpkg")


def test_wgs84_points_land_on_the_right_utm_pixels(wgs84_prompts: str) -> None:
    table = PromptTable.load(wgs84_prompts, None, UTM.to_wkt(), SCENE)
    assert table.point_keys == ("7", "8")
    np.testing.assert_allclose(table.points, [[20.5, 10.5], [450.5, 300.5]], atol=1e-3)
    # the polygon's box covers rows 100..130, cols 40..60 (a lon/lat box around a UTM square is a bit wider)
    ((x0, y0, x1, y1),) = table.boxes
    assert table.box_keys == ("9",)
    assert 38 < x0 <= 40 and 60 <= x1 < 62 and 98 < y0 <= 100 and 130 <= y1 < 132


def test_attributes_are_json_safe(wgs84_prompts: str) -> None:
    table = PromptTable.load(wgs84_prompts, None, UTM.to_wkt(), SCENE)
    assert table.attrs["7"] == {"id": 7, "crop": "wheat", "yield_t": 6.5}
    assert table.attrs["8"]["yield_t"] is None and table.attrs["9"]["crop"] is None
    json.dumps(table.attrs, allow_nan=False)


def test_routing_points_by_read_window_boxes_by_core(wgs84_prompts: str) -> None:
    table = PromptTable.load(wgs84_prompts, None, UTM.to_wkt(), SCENE)
    grid = TileGrid(width=512, height=512, tile_size=128, halo=16)
    seen: dict[str, int] = {}
    for tile in grid:
        prompts = table.for_tile(tile)
        for key, xy in zip(prompts.point_keys, prompts.points, strict=True):
            seen[key] = seen.get(key, 0) + 1
            assert 0 <= xy[0] < tile.read.width and 0 <= xy[1] < tile.read.height
        assert set(prompts.attrs) == set(prompts.point_keys) | set(prompts.box_keys)
    assert seen == {"7": 1, "8": 1}  # no halo hits here

    home = table.for_tile(grid[0, 0])  # read window starts at (-16, -16)
    np.testing.assert_allclose(home.points, [[36.5, 26.5]], atol=1e-3)
    assert home.box_keys == ("9",)  # the box (rows ~100..131) overlaps the cores of tiles (0, 0) and (1, 0)
    assert home.boxes[0][0] == pytest.approx(table.boxes[0][0] + 16)
    below = table.for_tile(grid[1, 0])  # read window starts at (-16, 112)
    assert below.box_keys == ("9",)
    _, y0, _, y1 = below.boxes[0]
    assert y0 == 0 and y1 == pytest.approx(table.boxes[0][3] - 112)  # clipped to the read window
    assert table.for_tile(grid[0, 1]).box_keys == ()  # no core overlap


def test_a_prompt_in_a_halo_goes_to_both_tiles(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame(geometry=[Point(SCENE @ (130.5, 10.5))], crs=UTM)  # col 130: core of tile 1, halo of 0
    table = PromptTable.load(_write(tmp_path, frame, "p.geojson"), None, UTM.to_wkt(), SCENE)
    grid = TileGrid(width=512, height=512, tile_size=128, halo=16)
    assert table.for_tile(grid[0, 0]).point_keys == table.for_tile(grid[0, 1]).point_keys == ("0",)
    assert len(table.for_tile(grid[0, 2])) == 0


@pytest.mark.parametrize("name", ["p.shp", "p.geojson", "p.parquet"])
def test_formats_and_row_index_keys(tmp_path: Path, name: str) -> None:
    frame = gpd.GeoDataFrame(
        {"label": ["a", "b"]},
        geometry=[MultiPoint([SCENE @ (5.5, 5.5)]), MultiPoint([SCENE @ (1.5, 1.5), SCENE @ (2.5, 3.5)])],
        crs=UTM,
    )
    table = PromptTable.load(_write(tmp_path, frame, name), None, UTM.to_wkt(), SCENE)
    assert table.point_keys == ("0", "1.0", "1.1")
    np.testing.assert_allclose(table.points, [[5.5, 5.5], [1.5, 1.5], [2.5, 3.5]], atol=1e-6)
    assert table.attrs["1.1"] == {"label": "b"}


def test_table_pickles(wgs84_prompts: str) -> None:
    table = PromptTable.load(wgs84_prompts, None, UTM.to_wkt(), SCENE)
    again = pickle.loads(pickle.dumps(table))
    tile = TileGrid(512, 512, 128, 16)[0, 0]
    assert again.for_tile(tile).point_keys == table.for_tile(tile).point_keys


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read prompts"):
        PromptTable.load(str(tmp_path / "missing.gpkg"), None, UTM.to_wkt(), SCENE)
    no_crs = gpd.GeoDataFrame(geometry=[Point(1, 1)])
    with pytest.raises(InputError, match="no CRS"):
        PromptTable.load(_write(tmp_path, no_crs, "nocrs.shp"), None, UTM.to_wkt(), SCENE)
    lines = gpd.GeoDataFrame(geometry=[LineString([(0, 0), (1, 1)])], crs=UTM)
    with pytest.raises(InputError, match="no point or polygon"):
        PromptTable.load(_write(tmp_path, lines, "lines.gpkg"), None, UTM.to_wkt(), SCENE)
    with pytest.raises(InputError, match="layer 'nope'"):
        PromptTable.load(_write(tmp_path, lines, "lines2.gpkg"), "nope", UTM.to_wkt(), SCENE)
