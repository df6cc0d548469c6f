"""Tests of geoseg.inputs.scene: the scene grid, windowed reads across files, resolutions and CRSs, validity."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from geoseg.errors import InputError, SpecError
from geoseg.inputs.scene import Scene, open_scene, read_decimated, read_window, scene_percentiles
from geoseg.inputs.tiles import TileGrid
from geoseg.inputs.validity import check_levels, check_valid_pixels
from geoseg.spec.job import InputSpec
from geoseg.testutils.faults import corrupt_nir_bands
from geoseg.testutils.rasters import ORIGIN, ramp, utm_transform, write_raster
from geoseg.testutils.scenes import write_field_scene

X0, Y0 = ORIGIN


def _scene(bands: dict[str, Path | list[Path]] | None = None, **inputs) -> Scene:
    """A scene from a band map of name -> file(s) (band 1), plus any other inputs settings."""
    if bands is not None:
        inputs["bands"] = {
            name: {"path": [str(p) for p in path] if isinstance(path, list) else str(path)}
            for name, path in bands.items()
        }
    return open_scene(InputSpec(**inputs))


def _read_all(scene: Scene, bands: tuple[str, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    return read_window(scene, Window(0, 0, scene.width, scene.height), bands)


def _upsample(array: np.ndarray, factor: int) -> np.ndarray:
    return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)


# --------------------------------------------------------------------------------------------- band stacking
@pytest.fixture
def ten_and_twenty(tmp_path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """An 8 x 8 band at 10 m and a 4 x 4 band at 20 m over the same extent."""
    a10, a20 = ramp(8, 8), ramp(4, 4, start=100)
    return (
        write_raster(tmp_path / "b10.tif", a10),
        write_raster(tmp_path / "b20.tif", a20, utm_transform(20)),
        a10,
        a20,
    )


def test_scene_grid_is_the_finest_band(ten_and_twenty):
    p10, p20, _, _ = ten_and_twenty
    scene = _scene({"coarse": p20, "fine": p10})
    assert (scene.width, scene.height) == (8, 8)
    assert scene.transform == utm_transform(10)
    assert scene.crs.to_epsg() == 32633
    assert scene.band_names == ("coarse", "fine")
    assert scene.pixel_size == (10.0, 10.0)


def test_coarse_band_nearest_is_repeated(ten_and_twenty):
    p10, p20, a10, a20 = ten_and_twenty
    scene = _scene({"fine": p10, "coarse": p20}, resampling="nearest")
    pixels, valid = _read_all(scene)
    assert pixels.shape == (2, 8, 8) and pixels.dtype == np.float32
    np.testing.assert_array_equal(pixels[0], a10)
    np.testing.assert_array_equal(pixels[1], _upsample(a20, 2))
    assert valid.all()


def test_coarse_band_bilinear_stays_within_range(tmp_path):
    a20 = np.array([[0, 10, 20, 30], [40, 50, 60, 70], [80, 90, 100, 110], [120, 130, 140, 150]], np.float32)
    p20 = write_raster(tmp_path / "b20.tif", a20, utm_transform(20))
    scene = _scene({"fine": write_raster(tmp_path / "b10.tif", ramp(8, 8)), "coarse": p20}, resampling="bilinear")
    pixels, valid = _read_all(scene, ("coarse",))
    assert valid.all()
    assert a20.min() <= pixels.min() and pixels.max() <= a20.max()
    assert not np.array_equal(pixels[0], _upsample(a20, 2))  # interpolated, not repeated
    assert np.all(np.diff(pixels[0], axis=1) >= 0) and np.all(np.diff(pixels[0], axis=0) >= 0)  # ramps stay ramps


def test_decimated_read(ten_and_twenty):
    p10, _, a10, _ = ten_and_twenty
    scene = _scene({"fine": p10}, resampling="nearest")
    pixels, valid = read_window(scene, Window(0, 0, 8, 8), out_shape=(4, 4))
    assert pixels.shape == (1, 4, 4) and valid.all()
    blocks = a10.reshape(4, 2, 4, 2).transpose(0, 2, 1, 3).reshape(4, 4, 4)
    assert all(pixels[0, r, c] in blocks[r, c] for r in range(4) for c in range(4))


def test_files_form_and_band_order(tmp_path):
    stack = np.stack([ramp(5, 6, start=s) for s in (1, 100, 200)])
    path = write_raster(tmp_path / "rgb.tif", stack)
    scene = _scene(files=[str(path)], band_names=["blue", "green", "red"])
    assert scene.band_names == ("blue", "green", "red")
    pixels, valid = read_window(scene, Window(1, 2, 3, 2), ("red", "blue"))
    np.testing.assert_array_equal(pixels, stack[[2, 0], 2:4, 1:4])
    assert valid.all()


def test_band_map_band_index(tmp_path):
    stack = np.stack([ramp(4, 4, start=s) for s in (1, 100)])
    path = str(write_raster(tmp_path / "two.tif", stack))
    scene = open_scene(InputSpec(bands={"nir": {"path": path, "band": 2}, "red": {"path": path}}))
    pixels, _ = _read_all(scene)
    np.testing.assert_array_equal(pixels, stack[[1, 0]])


def test_scene_is_picklable(ten_and_twenty):
    p10, p20, _, _ = ten_and_twenty
    scene = _scene({"fine": p10, "coarse": p20})
    copy = pickle.loads(pickle.dumps(scene))
    assert copy == scene
    np.testing.assert_array_equal(_read_all(copy)[0], _read_all(scene)[0])


# --------------------------------------------------------------------------------------------- mosaics, CRSs
@pytest.mark.parametrize("res", [10, 20], ids=["same-grid", "resampled"])
def test_mosaic_is_seamless(tmp_path, res):
    """Two files side by side: every window reads each pixel from the file that covers it."""
    left, right = ramp(6, 4, start=1), ramp(6, 4, start=101)
    (tmp_path / "tiles").mkdir()
    write_raster(tmp_path / "tiles/left.tif", left, utm_transform(res))
    write_raster(tmp_path / "tiles/right.tif", right, utm_transform(res, X0 + 4 * res))
    scene = _scene({"b": [tmp_path / "tiles/*.tif"]}, resolution=10, resampling="nearest")
    factor = res // 10
    whole = _upsample(np.hstack([left, right]), factor)
    assert (scene.width, scene.height) == (8 * factor, 6 * factor)
    pixels, valid = _read_all(scene)
    np.testing.assert_array_equal(pixels[0], whole)
    assert valid.all()
    seam = 4 * factor
    for col_off in range(seam - 3, seam + 1):  # windows straddling the seam
        pixels, valid = read_window(scene, Window(col_off, 1, 3, 4))
        np.testing.assert_array_equal(pixels[0], whole[1:5, col_off : col_off + 3])
        assert valid.all()


def test_scene_is_where_every_band_has_data(tmp_path):
    """A coarse band over the top-left quarter only: the scene is that quarter (the bands' intersection)."""
    write_raster(tmp_path / "fine.tif", ramp(8, 8))
    write_raster(tmp_path / "part.tif", ramp(2, 2, start=50), utm_transform(20))
    scene = _scene({"fine": tmp_path / "fine.tif", "part": tmp_path / "part.tif"}, resampling="nearest")
    assert (scene.width, scene.height) == (4, 4)
    assert scene.transform == utm_transform(10)
    pixels, valid = _read_all(scene)
    assert valid.all()
    np.testing.assert_array_equal(pixels[0], ramp(8, 8)[:4, :4])
    np.testing.assert_array_equal(pixels[1], _upsample(ramp(2, 2, start=50), 2))


def test_band_mosaic_with_a_gap(tmp_path):
    """A band's files are unioned: a mosaic of two opposite quarters spans the scene; the gaps read invalid, not 0."""
    write_raster(tmp_path / "fine.tif", ramp(8, 8))
    write_raster(tmp_path / "q1.tif", ramp(2, 2, start=50), utm_transform(20))
    write_raster(tmp_path / "q4.tif", ramp(2, 2, start=90), utm_transform(20, X0 + 40, Y0 - 40))
    scene = _scene(
        {"fine": tmp_path / "fine.tif", "part": [tmp_path / "q1.tif", tmp_path / "q4.tif"]},
        resampling="nearest",
    )
    assert (scene.width, scene.height) == (8, 8)
    pixels, valid = _read_all(scene)
    expected = np.zeros((8, 8), bool)
    expected[:4, :4] = expected[4:, 4:] = True
    np.testing.assert_array_equal(valid, expected)
    np.testing.assert_array_equal(pixels[1, :4, :4], _upsample(ramp(2, 2, start=50), 2))
    assert (pixels[:, ~expected] == 0).all()


def test_bands_that_do_not_overlap(tmp_path):
    write_raster(tmp_path / "a.tif", ramp(4, 4))
    write_raster(tmp_path / "b.tif", ramp(4, 4), utm_transform(10, X0 + 1000))
    with pytest.raises(InputError, match=r"'b'.*does not overlap band.*'a'"):
        _scene({"a": tmp_path / "a.tif", "b": tmp_path / "b.tif"})


def test_file_in_another_crs(tmp_path):
    """A 40 m band in ETRS89-LAEA (EPSG:3035) read on a 10 m UTM grid."""
    write_raster(tmp_path / "utm.tif", ramp(20, 20))
    to_laea = Transformer.from_crs("EPSG:32633", "EPSG:3035", always_xy=True)
    x, y = to_laea.transform(X0, Y0)
    laea_transform = utm_transform(40, round(x / 40) * 40 - 120, round(y / 40) * 40 + 120)
    laea = ramp(12, 12, start=1000)
    write_raster(tmp_path / "laea.tif", laea, laea_transform, crs="EPSG:3035")
    scene = _scene({"utm": tmp_path / "utm.tif", "laea": tmp_path / "laea.tif"}, resampling="nearest")
    assert scene.crs.to_epsg() == 32633 and scene.pixel_size == (10.0, 10.0)
    assert (scene.width, scene.height) == (20, 20)  # where both bands exist: the UTM file lies inside the LAEA one
    pixels, laea_valid = _read_all(scene, ("laea",))

    # expected: the LAEA pixel under each scene pixel centre
    rows, cols = np.mgrid[0 : scene.height, 0 : scene.width]
    xs, ys = scene.transform @ (cols + 0.5, rows + 0.5)
    c, r = ~laea_transform @ to_laea.transform(xs, ys)
    r, c = np.floor(r).astype(int), np.floor(c).astype(int)
    inside = (r >= 0) & (r < 12) & (c >= 0) & (c < 12)
    expected = np.where(inside, laea[r.clip(0, 11), c.clip(0, 11)], 0)
    assert (laea_valid == inside).mean() > 0.995
    assert (pixels[0] == expected).mean() > 0.99  # GDAL's approximate transformer may pick a neighbour at edges


def test_finest_band_is_compared_in_one_crs(tmp_path):
    """A 0.0005° (~40 m) band must not win over a 20 m band because 0.0005 < 20: the scene stays in UTM at 20 m."""
    write_raster(tmp_path / "utm.tif", ramp(20, 20), utm_transform(20))
    lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(X0, Y0)
    geo = Affine(0.0005, 0, lon - 0.005, 0, -0.0005, lat + 0.005)
    write_raster(tmp_path / "geo.tif", ramp(40, 40), geo, crs="EPSG:4326")
    scene = _scene({"utm": tmp_path / "utm.tif", "geo": tmp_path / "geo.tif"})
    assert scene.crs.to_epsg() == 32633 and scene.pixel_size == (20.0, 20.0)
    assert _read_all(scene)[1].mean() > 0.9


def test_inputs_crs_chooses_the_target(tmp_path):
    write_raster(tmp_path / "utm.tif", ramp(20, 20))
    scene = _scene({"utm": tmp_path / "utm.tif"}, crs="EPSG:3035")
    assert scene.crs.to_epsg() == 3035 and 9 < scene.pixel_size[0] < 11
    assert _read_all(scene)[1].mean() > 0.8
    with pytest.raises(InputError, match=r"inputs\.crs 'EPSG:999999' is not a known CRS"):
        _scene({"utm": tmp_path / "utm.tif"}, crs="EPSG:999999")


def test_nan_and_inf_are_nodata(tmp_path):
    data = np.arange(16, dtype="float32").reshape(4, 4)
    data[0, 0], data[1, 1], data[2, 2] = np.nan, np.inf, -np.inf
    write_raster(tmp_path / "f.tif", data)
    pixels, valid = _read_all(_scene({"f": tmp_path / "f.tif"}))
    assert valid.sum() == 13 and not valid[0, 0] and not valid[1, 1] and not valid[2, 2]
    assert np.isfinite(pixels).all()


@pytest.mark.parametrize("fill", [np.nan, np.inf, 0.0])
def test_inputs_without_a_valid_pixel(tmp_path, fill):
    write_raster(tmp_path / "ok.tif", ramp(8, 8))
    write_raster(tmp_path / "bad.tif", np.full((8, 8), fill, "float32"), nodata=0.0)
    scene = _scene({"ok": tmp_path / "ok.tif", "bad": tmp_path / "bad.tif"})
    check_valid_pixels(scene, ("ok",))
    with pytest.raises(InputError, match=r"band 'bad' .* holds no valid pixel"):
        check_valid_pixels(scene, ("ok", "bad"))


def test_a_single_valid_pixel_is_found(tmp_path):
    """The decimated overview may miss it; the full-resolution scan must not."""
    data = np.zeros((300, 300), "uint16")
    data[151, 149] = 7
    write_raster(tmp_path / "sparse.tif", data, nodata=0)
    check_valid_pixels(_scene({"s": tmp_path / "sparse.tif"}), ("s",), max_size=16, block=64)


def test_valid_areas_that_never_meet(tmp_path):
    left, right = np.zeros((8, 8), "uint16"), np.zeros((8, 8), "uint16")
    left[:, :4], right[:, 4:] = 1, 1
    write_raster(tmp_path / "l.tif", left, nodata=0)
    write_raster(tmp_path / "r.tif", right, nodata=0)
    with pytest.raises(InputError, match="never hold valid pixels at the same place"):
        check_valid_pixels(_scene({"l": tmp_path / "l.tif", "r": tmp_path / "r.tif"}), ("l", "r"))


# --------------------------------------------------------------------------------------------- edges, validity
def test_reads_past_the_scene_edges(ten_and_twenty):
    p10, p20, a10, a20 = ten_and_twenty
    scene = _scene({"fine": p10, "coarse": p20}, resampling="nearest")
    pixels, valid = read_window(scene, Window(-3, -2, 14, 12))
    inside = np.zeros((12, 14), bool)
    inside[2:10, 3:11] = True
    np.testing.assert_array_equal(valid, inside)
    np.testing.assert_array_equal(pixels[0, 2:10, 3:11], a10)
    np.testing.assert_array_equal(pixels[1, 2:10, 3:11], _upsample(a20, 2))
    assert (pixels[:, ~inside] == 0).all()


def test_window_wholly_outside_is_invalid(ten_and_twenty):
    p10, p20, _, _ = ten_and_twenty
    scene = _scene({"fine": p10, "coarse": p20})
    pixels, valid = read_window(scene, Window(20, -30, 5, 5))
    assert not valid.any() and not pixels.any()


def test_tile_reads_cut_back_to_the_scene(tmp_path):
    """Every tile's read window, cut with core_in_read, gives exactly the scene under its core."""
    data = ramp(23, 17)
    scene = _scene({"b": write_raster(tmp_path / "b.tif", data)})
    grid = TileGrid(scene.width, scene.height, tile_size=8, halo=3)
    for tile in grid:
        pixels, valid = read_window(scene, tile.read)
        assert pixels.shape == (1, grid.read_size, grid.read_size)
        core = tile.core
        expected = data[core.row_off : core.row_off + core.height, core.col_off : core.col_off + core.width]
        np.testing.assert_array_equal(pixels[0][tile.core_in_read], expected)
        rows = np.arange(tile.read.row_off, tile.read.row_off + grid.read_size)
        cols = np.arange(tile.read.col_off, tile.read.col_off + grid.read_size)
        inside = ((rows >= 0) & (rows < 23))[:, None] & ((cols >= 0) & (cols < 17))[None, :]
        np.testing.assert_array_equal(valid, inside)


def _with_holes(start: int = 1) -> np.ndarray:
    data = ramp(4, 4, start=start)
    data[0, 0] = 0
    data[3, 3] = 9999
    return data


@pytest.mark.parametrize("res", [10, 20], ids=["same-grid", "resampled"])
def test_file_nodata(tmp_path, res):
    data = _with_holes()
    path = write_raster(tmp_path / "b.tif", data, utm_transform(res), nodata=0)
    scene = _scene({"b": path}, resolution=10, resampling="nearest")
    pixels, valid = _read_all(scene)
    factor = res // 10
    np.testing.assert_array_equal(valid, _upsample(data != 0, factor))
    np.testing.assert_array_equal(pixels[0], _upsample(data, factor))


@pytest.mark.parametrize("res", [10, 20], ids=["same-grid", "resampled"])
def test_spec_nodata_without_file_nodata(tmp_path, res):
    data = _with_holes()
    scene = _scene({"b": write_raster(tmp_path / "b.tif", data, utm_transform(res))}, resolution=res, nodata=0)
    pixels, valid = _read_all(scene)
    np.testing.assert_array_equal(valid, data != 0)
    np.testing.assert_array_equal(pixels[0], data)


@pytest.mark.parametrize("res", [10, 20], ids=["same-grid", "resampled"])
def test_spec_nodata_replaces_the_files(tmp_path, res):
    """inputs.nodata overrides the file's nodata: the file's value becomes data, the spec's value is the hole."""
    data = _with_holes()
    path = write_raster(tmp_path / "b.tif", data, utm_transform(res), nodata=0)
    scene = _scene({"b": path}, resolution=10, nodata=9999, resampling="nearest")
    pixels, valid = _read_all(scene)
    factor = res // 10
    np.testing.assert_array_equal(valid, _upsample(data != 9999, factor))
    np.testing.assert_array_equal(pixels[0], _upsample(np.where(data == 9999, 0, data), factor))


def test_a_pixel_is_valid_only_where_every_band_is(tmp_path):
    a, b = ramp(4, 4), ramp(4, 4, start=50)
    a[1, 2] = 0
    b[2, 1] = 0
    scene = _scene({"a": write_raster(tmp_path / "a.tif", a, nodata=0), "b": write_raster(tmp_path / "b.tif", b)})
    pixels, valid = _read_all(scene)
    expected = np.ones((4, 4), bool)
    expected[1, 2] = False
    np.testing.assert_array_equal(valid, expected)  # b has no nodata: its 0 is data
    assert (pixels[:, 1, 2] == 0).all() and pixels[1, 2, 1] == 0 and pixels[0, 2, 1] == a[2, 1]


@pytest.mark.parametrize("res", [10, 20], ids=["same-grid", "resampled"])
def test_internal_mask(tmp_path, res):
    data = ramp(4, 4)
    mask = np.ones((4, 4), bool)
    mask[0, :2] = False
    mask[2, 3] = False
    path = write_raster(tmp_path / "m.tif", data, utm_transform(res), mask=mask)
    scene = _scene({"b": path}, resolution=10, resampling="nearest")
    pixels, valid = _read_all(scene)
    factor = res // 10
    np.testing.assert_array_equal(valid, _upsample(mask, factor))
    np.testing.assert_array_equal(pixels[0], _upsample(np.where(mask, data, 0), factor))


def test_alpha_band_masks_resampled_reads(tmp_path):
    rgba = np.full((4, 2, 2), 80, np.uint8)
    rgba[3] = 255
    rgba[3, 1, 1] = 0
    path = write_raster(tmp_path / "rgba.tif", rgba, utm_transform(20))
    with rasterio.open(path, "r+") as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    scene = _scene(files=[str(path)], band_names=["red", "green", "blue", "alpha"], resolution=10)
    pixels, valid = read_window(scene, Window(0, 0, 4, 4), ("red",))
    np.testing.assert_array_equal(valid, _upsample(rgba[3] > 0, 2))
    assert (pixels[0][valid] == 80).all()


def test_scale_and_offset(tmp_path):
    data = ramp(3, 3, start=1000)
    data[1, 1] = 0
    scene = _scene({"b": write_raster(tmp_path / "b.tif", data)}, nodata=0, scale=0.0001, offset=-0.1)
    pixels, valid = _read_all(scene)
    assert not valid[1, 1] and pixels[0, 1, 1] == 0  # invalid pixels are 0, not the offset
    np.testing.assert_allclose(pixels[0][valid], data[valid] * 0.0001 - 0.1, atol=1e-6)  # float32
    assert abs(pixels[0, 0, 0]) < 1e-6  # 1000 * 0.0001 - 0.1


# --------------------------------------------------------------------------------------------- AOI
def test_aoi_masks_pixels_outside_it(tmp_path):
    scene_path = write_raster(tmp_path / "b.tif", ramp(20, 20))
    triangle = shapely.Polygon([(X0, Y0), (X0 + 205, Y0), (X0, Y0 - 205)])
    scene = open_scene(InputSpec(bands={"b": {"path": str(scene_path)}}), triangle, "EPSG:32633")
    assert (scene.width, scene.height) == (20, 20)
    pixels, valid = _read_all(scene)
    rows, cols = np.mgrid[0:20, 0:20]
    np.testing.assert_array_equal(valid, (cols + 0.5) + (rows + 0.5) < 20.5)  # pixel centres inside
    assert (pixels[0][~valid] == 0).all()


def test_aoi_cuts_the_grid(tmp_path):
    data = ramp(20, 20)
    scene_path = write_raster(tmp_path / "b.tif", data)
    aoi = shapely.box(X0 + 52, Y0 - 148, X0 + 103, Y0 - 93)  # cols 5.2..10.3, rows 9.3..14.8
    scene = open_scene(InputSpec(bands={"b": {"path": str(scene_path)}}), aoi, "EPSG:32633")
    assert scene.transform == utm_transform(10, X0 + 50, Y0 - 90)  # still on the file's pixel grid
    assert (scene.width, scene.height) == (6, 6)
    pixels, valid = _read_all(scene)
    np.testing.assert_array_equal(pixels[0][valid], data[9:15, 5:11][valid])
    assert valid[1:5, 1:5].all() and not valid[:, 5].any()  # the last column's centres lie past the AOI


def test_aoi_in_wgs84(tmp_path):
    scene_path = write_raster(tmp_path / "b.tif", ramp(20, 20))
    to_wgs84 = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    utm_box = shapely.box(X0 + 40, Y0 - 160, X0 + 120, Y0 - 80)
    aoi = shapely.transform(shapely.segmentize(utm_box, 5), lambda xy: np.column_stack(to_wgs84.transform(*xy.T)))
    scene = open_scene(InputSpec(bands={"b": {"path": str(scene_path)}}), aoi)  # aoi_crs defaults to EPSG:4326
    assert abs(scene.transform.c - (X0 + 40)) <= 10 and abs(scene.transform.f - (Y0 - 80)) <= 10
    assert abs(scene.width - 8) <= 1 and abs(scene.height - 8) <= 1
    _, valid = _read_all(scene)
    assert 0.7 < valid.mean() <= 1.0


def test_aoi_outside_the_inputs(tmp_path):
    path = write_raster(tmp_path / "b.tif", ramp(4, 4))
    with pytest.raises(InputError, match="AOI does not overlap"):
        open_scene(InputSpec(bands={"b": {"path": str(path)}}), shapely.box(0, 0, 1, 1), "EPSG:32633")


# --------------------------------------------------------------------------------------------- errors
def test_band_index_beyond_the_file(tmp_path):
    path = write_raster(tmp_path / "two.tif", np.stack([ramp(4, 4)] * 2))
    spec = InputSpec(bands={"swir16": {"path": str(path), "band": 3}})
    with pytest.raises(InputError) as info:
        open_scene(spec)
    message = str(info.value)
    assert str(path) in message and "2 band(s)" in message and "'swir16'" in message and "band 3" in message


def test_more_band_names_than_bands(tmp_path):
    path = write_raster(tmp_path / "rgb.tif", np.stack([ramp(4, 4)] * 3))
    with pytest.raises(InputError, match="'nir' asks for band 4"):
        _scene(files=[str(path)], band_names=["red", "green", "blue", "nir"])


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.tif"
    with pytest.raises(InputError, match="cannot open input raster") as info:
        _scene({"b": missing})
    assert str(missing) in str(info.value)
    assert isinstance(info.value, OSError)


def test_glob_matching_nothing(tmp_path):
    with pytest.raises(SpecError, match="no file matches"):
        _scene({"b": tmp_path / "*.tif"})


def test_file_without_crs(tmp_path):
    path = write_raster(tmp_path / "nocrs.tif", ramp(4, 4), crs=None)
    with pytest.raises(InputError, match="has no CRS"):
        _scene({"b": path})


def test_unknown_band_name(ten_and_twenty):
    scene = _scene({"fine": ten_and_twenty[0]})
    with pytest.raises(InputError, match=r"band 'nir' is not in inputs \(have: fine\)"):
        read_window(scene, Window(0, 0, 2, 2), ("nir",))


# --------------------------------------------------------------------------------------------- statistics, areas
def test_scene_percentiles_on_a_ramp(tmp_path):
    scene = _scene({"b": write_raster(tmp_path / "b.tif", ramp(10, 10))})  # 1..100
    (p,) = scene_percentiles(scene, ("b",)).values()
    assert p.shape == (101,)
    np.testing.assert_allclose(p, 1 + 0.99 * np.arange(101), rtol=1e-6)  # numpy's linear percentiles
    assert p[0] == 1 and p[50] == 50.5 and p[100] == 100


def test_scene_percentiles_skip_invalid_and_scale(tmp_path):
    data = ramp(10, 10)
    data[0, :5] = 0
    scene = _scene({"b": write_raster(tmp_path / "b.tif", data)}, nodata=0, scale=0.5)
    p = scene_percentiles(scene, ("b",))["b"]
    assert p[0] == 3.0 and p[100] == 50.0  # 6 * 0.5 .. 100 * 0.5


def test_scene_percentiles_decimated(tmp_path):
    scene = _scene({"b": write_raster(tmp_path / "b.tif", ramp(40, 40))})
    p = scene_percentiles(scene, ("b",), max_size=10)["b"]
    assert 1 <= p[0] < p[50] < p[100] <= 1600


def test_scene_percentiles_with_no_valid_pixel(tmp_path):
    scene = _scene({"b": write_raster(tmp_path / "b.tif", np.zeros((4, 4), np.uint8))}, nodata=0)
    with pytest.raises(InputError, match="no valid pixels"):
        scene_percentiles(scene, ("b",))


@pytest.mark.parametrize(("res", "area"), [(10, 100.0), (20, 400.0), (0.5, 0.25)])
def test_pixel_area_in_utm(tmp_path, res, area):
    scene = _scene({"b": write_raster(tmp_path / "b.tif", ramp(4, 4), utm_transform(res))})
    assert scene.pixel_area_m2 == pytest.approx(area)


def test_pixel_area_in_us_feet(tmp_path):
    transform = Affine(10, 0, 1_000_000, 0, -10, 200_000)
    path = write_raster(tmp_path / "ny.tif", ramp(4, 4), transform, crs="EPSG:2263")  # NY Long Island, US ft
    assert _scene({"b": path}).pixel_area_m2 == pytest.approx((10 * 1200 / 3937) ** 2)


def test_pixel_area_in_wgs84_is_geodesic(tmp_path):
    d = 0.0001  # degrees, about 11 m x 8 m at 45° N
    path = write_raster(tmp_path / "geo.tif", ramp(10, 10), Affine(d, 0, 15.0, 0, -d, 45.0005), crs="EPSG:4326")
    scene = _scene({"b": path})
    radius = 6_371_008.8  # mean Earth radius
    expected = (radius * math.radians(d)) ** 2 * math.cos(math.radians(45.0))
    assert scene.pixel_area_m2 == pytest.approx(expected, rel=0.01)


def test_a_corrupt_block_leaves_the_rest_of_a_whole_scene_read(tmp_path, caplog):
    """The quicklook's and the plan's whole-scene reads: a corrupt 4 KiB block of one band is nodata, the rest is
    read (it used to abort the export after the good tiles had finished)."""
    scene_files = write_field_scene(tmp_path / "scene", 512, 512, cell=100, seed=3)
    bands = corrupt_nir_bands(scene_files.red, scene_files.nir, tmp_path / "corrupt")
    scene = _scene({name: Path(ref["path"]) for name, ref in bands.items()}, scale=0.0001)
    with pytest.raises(InputError):  # the block is unreadable indeed
        read_window(scene, Window(0, 0, 512, 512), ("red", "nir"))
    with caplog.at_level("WARNING"):
        pixels, valid = read_decimated(scene, ("red", "nir"), max_size=128)
    assert "unreadable ones as nodata" in caplog.text
    assert pixels.shape == (2, 128, 128)
    assert 0.2 < valid.mean() < 0.5  # two blocks of four are bad, and the pieces whose resampling touches them
    clean, _ = read_decimated(_scene({"red": scene_files.red, "nir": scene_files.nir}, scale=0.0001), ("red",), 128)
    np.testing.assert_allclose(pixels[0][valid], clean[0][valid], atol=1e-6)


@pytest.mark.parametrize(
    ("values", "scale", "says"),
    [
        (np.full((64, 64), 200, "uint8"), 1.0, "values 200-200 look like 8-bit numbers, not reflectance"),
        (np.full((64, 64), 3000, "uint16"), 1.0, "look like digital numbers, not reflectance (0-1): set inputs.scale"),
        (np.full((64, 64), 0.3, "float32"), 0.0001, "is inputs.scale applied to reflectance already?"),
        (np.full((64, 64), 0.3, "float32"), 1.0, None),
        (np.full((64, 64), 3000, "uint16"), 0.0001, None),
    ],
    ids=["uint8", "dn-without-scale", "reflectance-scaled-again", "reflectance", "dn-scaled"],
)
def test_levels_that_do_not_look_like_reflectance_are_named(tmp_path, values, scale, says):
    write_raster(tmp_path / "red.tif", values, nodata=0)
    scene = _scene({"red": tmp_path / "red.tif"}, scale=scale)
    warning = check_levels(scene, ("red",))
    assert warning is None if says is None else (warning is not None and says in warning), warning


def test_a_scale_that_gives_impossible_reflectance_is_one_line(tmp_path):
    write_raster(tmp_path / "red.tif", np.full((64, 64), 60000, "uint16"), nodata=0)
    with pytest.raises(InputError, match=r"values 60000-60000 with inputs.scale 0.01 give reflectance up to 600"):
        check_levels(_scene({"red": tmp_path / "red.tif"}, scale=0.01), ("red",))
