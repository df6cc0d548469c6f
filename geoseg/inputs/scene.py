"""Inputs as one band stack on one grid, read window by window.

:func:`open_scene` looks at every input file once (headers only) and fixes the scene grid: the CRS and pixel size of
the finest band (or ``inputs.crs``; other files are reprojected on the fly), where every band has data (a band's
files unioned, the bands intersected, cut to the AOI), aligned to the finest file's pixel grid.
:func:`read_window` reads any window of that grid, including windows that reach past the scene: each band from each
file that covers it, resampled onto the window's grid when the file's grid differs, nodata and masks honoured.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.features import geometry_mask
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from geoseg.errors import InputError
from geoseg.inputs.grid import (
    BandSource,
    FileInfo,
    SceneGrid,
    aligned_grid,
    common_area,
    file_info,
    native_res,
    scene_crs,
    to_crs,
)
from geoseg.inputs.qa import QualityMask
from geoseg.inputs.reads import GridRead, OpenFiles, opened, read_bands
from geoseg.inputs.stac import StacInputs, resolve_stac
from geoseg.inputs.stac_search import SearchResult, resolve_search
from geoseg.spec.job import InputSpec, expand_paths

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scene:
    """The scene grid and where each band comes from. Small and picklable: tasks re-open files from paths."""

    bands: tuple[BandSource, ...]
    grid: SceneGrid
    """The scene's pixel grid (CRS, transform, size): one value for the plan, the COG writer and the quicklook."""
    nodata: float | None = None
    scale: float = 1.0
    offset: float = 0.0
    resampling: str = "bilinear"
    aoi_wkb: bytes | None = None
    """Area of interest in the scene CRS; pixels outside it read as invalid."""
    quality_mask: QualityMask | None = None
    """Cloud / quality raster; the pixels it masks read as invalid."""
    datetime: datetime | None = None
    """Acquisition time of the imagery, when the inputs say it."""
    search: SearchResult | None = None
    """With ``inputs.stac_search``: the items found per day and the day chosen (for ``geoseg plan``)."""

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.bands)

    @property
    def crs_wkt(self) -> str:
        return self.grid.crs_wkt

    @property
    def crs(self) -> CRS:
        return self.grid.crs

    @property
    def transform(self) -> Affine:
        return self.grid.transform

    @property
    def width(self) -> int:
        return self.grid.width

    @property
    def height(self) -> int:
        return self.grid.height

    @property
    def pixel_size(self) -> tuple[float, float]:
        return self.grid.pixel_size

    @property
    def pixel_area_m2(self) -> float:
        return self.grid.pixel_area_m2

    @cached_property
    def aoi(self) -> shapely.Geometry | None:
        return None if self.aoi_wkb is None else shapely.from_wkb(self.aoi_wkb)

    def band(self, name: str) -> BandSource:
        for band in self.bands:
            if band.name == name:
                return band
        raise InputError(f"band {name!r} is not in inputs (have: {', '.join(self.band_names)}); add it to the band map")


def band_sources(spec: InputSpec, stac: StacInputs | None = None) -> tuple[BandSource, ...]:
    """Normalise the input forms (band map, multi-band files + names, STAC assets) into band sources."""
    if stac is not None:
        return tuple(BandSource(name, hrefs, index) for name, (hrefs, index) in stac.bands.items())
    if spec.bands is not None:
        return tuple(BandSource(name, tuple(expand_paths(ref.path)), ref.band) for name, ref in spec.bands.items())
    files = tuple(expand_paths(spec.files or []))
    return tuple(BandSource(name, files, i + 1) for i, name in enumerate(spec.band_names or []))


def open_scene(spec: InputSpec, aoi: shapely.Geometry | None = None, aoi_crs: str | None = None) -> Scene:
    """Fix the scene grid from the inputs' headers (no pixels are read).

    The scene is where every band has data: the files of one band form a mosaic (their extents are unioned), the
    bands' extents are intersected, then cut to the AOI. Files in another CRS are reprojected on the fly.

    Args:
        spec: the job's inputs.
        aoi: optional area of interest, in ``aoi_crs``; the scene is cut to its bounds (and a STAC search without
            a bbox searches it).
        aoi_crs: CRS of ``aoi`` (any form pyproj understands).
    """
    stac, search = _stac_inputs(spec, aoi, aoi_crs)
    sources = band_sources(spec, stac)
    infos = {p: file_info(p) for band in sources for p in band.paths}
    quality_mask = _quality_mask(spec, stac)
    for band in sources:
        for path in band.paths:
            if band.index > infos[path].count:
                raise InputError(
                    f"{path} has {infos[path].count} band(s); band {band.name!r} asks for band {band.index}"
                )
    crs = scene_crs(spec.crs, infos)
    in_crs = [i for i in infos.values() if i.crs == crs]
    res = spec.resolution or min(abs(i.transform.a) if i.crs == crs else native_res(i, crs) for i in infos.values())
    area = common_area(sources, infos, crs)
    aoi_scene = None
    if aoi is not None:
        aoi_scene = to_crs(aoi, aoi_crs or "EPSG:4326", crs)
        area = area.intersection(aoi_scene)
        if area.is_empty:
            raise InputError("the AOI does not overlap the inputs: check aoi and its crs")
        if area.area <= 0:
            raise InputError("the AOI only touches the inputs (at a corner or an edge): check aoi and its crs")
    bounds = area.bounds
    finest = min(in_crs, key=lambda i: abs(i.transform.a)) if in_crs else None
    ref = finest or FileInfo("", crs, Affine(res, 0, bounds[0], 0, -res, bounds[3]), bounds, 1)
    transform, width, height = aligned_grid(ref, res, bounds)
    if min(width, height) < 1:
        raise InputError(f"the area the AOI and the inputs share is less than a pixel ({res:g}) wide: check aoi")
    return Scene(
        bands=sources,
        grid=SceneGrid(crs.to_wkt(), transform, width, height),
        nodata=spec.nodata,
        scale=spec.scale,
        offset=spec.offset,
        resampling=spec.resampling,
        aoi_wkb=None if aoi_scene is None else shapely.to_wkb(aoi_scene),
        quality_mask=quality_mask,
        datetime=spec.datetime or (stac.datetime if stac else None),
        search=search,
    )


def _stac_inputs(
    spec: InputSpec, aoi: shapely.Geometry | None, aoi_crs: str | None
) -> tuple[StacInputs | None, SearchResult | None]:
    """The bands' hrefs from a STAC Item or a STAC API search (and the search's listing)."""
    if spec.stac is not None:
        return resolve_stac(spec), None
    if spec.stac_search is not None:
        return resolve_search(spec, aoi, aoi_crs)
    return None, None


def _quality_mask(spec: InputSpec, stac: StacInputs | None) -> QualityMask | None:
    """The spec's QA raster (a file, or a STAC asset), its files checked (headers only)."""
    if spec.mask is None:
        return None
    if spec.mask.asset is not None:
        assert stac is not None and stac.mask_hrefs
        paths: tuple[str, ...] = stac.mask_hrefs
    else:
        assert spec.mask.path is not None
        paths = tuple(expand_paths(spec.mask.path))
    for path in paths:
        info = file_info(path)
        if spec.mask.band > info.count:
            raise InputError(f"{path} has {info.count} band(s); inputs.mask asks for band {spec.mask.band}")
    return QualityMask(paths, spec.mask.band, spec.mask)


# --------------------------------------------------------------------------------------------- reading
def _read_group(
    paths: tuple[str, ...], indexes: list[int], grid: GridRead, files: OpenFiles | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Bands ``indexes`` of a mosaic of ``paths`` on the window grid, the first file that covers a pixel giving its
    value: (values (k, H, W), filled (k, H, W)); None when no file overlaps the window."""
    rows, cols = grid.shape
    bounds = rasterio.transform.array_bounds(rows, cols, grid.transform)
    out: tuple[np.ndarray, np.ndarray] | None = None
    for path in paths:
        try:
            with opened(path, files) as src:
                file_bounds = src.bounds if src.crs == grid.crs else transform_bounds(src.crs, grid.crs, *src.bounds)
                if not _overlaps(bounds, file_bounds):
                    continue
                data, valid = read_bands(src, indexes, grid)
        except (rasterio.RasterioIOError, OSError) as err:
            raise InputError(f"cannot read {path}: {err}") from None
        if out is None:  # the first file: taken whole, in its dtype (invalid pixels are zeroed by the caller)
            out = data, valid
        else:
            merged = out[0].astype(np.result_type(out[0], data, np.float32), copy=False)
            take = valid & ~out[1]
            merged[take] = data[take]
            out = merged, out[1] | take
        if out[1].all():
            break
    return out


def _overlaps(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def read_window(
    scene: Scene,
    window: Window,
    bands: tuple[str, ...] | None = None,
    out_shape: tuple[int, int] | None = None,
    files: OpenFiles | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read bands over a window of the scene grid (the window may reach past the scene).

    Bands from the same files are read together, one call per file.

    Args:
        scene: the scene.
        window: window in scene pixel coordinates.
        bands: band names to read, in order; default all.
        out_shape: (rows, cols) to resample the window to (decimated reads); default the window's size.
        files: datasets kept open between reads (a worker's); default: each file opened for this read.

    Returns:
        ``pixels`` float32 (C, H, W) scaled to reflectance (0 where invalid) and ``valid`` bool (H, W): True where
        every band has data, inside the scene and inside the AOI.
    """
    names = bands or scene.band_names
    rows, cols = out_shape or (int(window.height), int(window.width))
    transform = rasterio.windows.transform(window, scene.transform) @ Affine.scale(
        window.width / cols, window.height / rows
    )
    grid = GridRead(scene.crs, transform, (rows, cols), scene.nodata, scene.resampling)
    pixels = np.zeros((len(names), rows, cols), np.float32)
    valid = _inside_scene(scene, window, (rows, cols))
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(scene.band(name).paths, []).append(i)
    for paths, positions in groups.items():
        read = _read_group(paths, [scene.band(names[i]).index for i in positions], grid, files)
        if read is None:
            valid[...] = False
            continue
        pixels[positions] = read[0]
        valid &= read[1].all(axis=0)
    if scene.quality_mask is not None:
        valid &= ~_read_quality_mask(scene.quality_mask, scene, transform, (rows, cols))
    if scene.aoi is not None:
        valid &= geometry_mask([scene.aoi], (rows, cols), transform, invert=True, all_touched=False)
    if scene.scale != 1.0 or scene.offset != 0.0:
        pixels *= np.float32(scene.scale)
        pixels += np.float32(scene.offset)
    pixels[:, ~valid] = 0.0
    return pixels, valid


def _read_quality_mask(mask: QualityMask, scene: Scene, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """Masked pixels of the window: the QA raster resampled by nearest neighbour (bit fields must not blend)."""
    masked = np.zeros(shape, bool)
    for path in mask.paths:
        try:
            with (
                rasterio.open(path) as src,
                WarpedVRT(
                    src,
                    crs=scene.crs,
                    transform=transform,
                    width=shape[1],
                    height=shape[0],
                    resampling=Resampling.nearest,
                    add_alpha=ColorInterp.alpha not in src.colorinterp,
                ) as vrt,
            ):
                qa = vrt.read(mask.band)
                covered = vrt.read_masks(mask.band) > 0
        except rasterio.RasterioIOError as err:
            raise InputError(f"cannot read quality mask {path}: {err}") from None
        masked |= covered & mask.masked(qa)
    return masked


def _inside_scene(scene: Scene, window: Window, shape: tuple[int, int]) -> np.ndarray:
    """Mask of the window's pixels that fall inside the scene grid."""
    rows = window.row_off + (np.arange(shape[0]) + 0.5) * window.height / shape[0]
    cols = window.col_off + (np.arange(shape[1]) + 0.5) * window.width / shape[1]
    return ((rows >= 0) & (rows < scene.height))[:, None] & ((cols >= 0) & (cols < scene.width))[None, :]


def overview_shape(scene: Scene, max_size: int = 1024) -> tuple[int, int]:
    """(rows, cols) of a decimated whole-scene read of at most ``max_size`` px a side."""
    factor = max(1.0, max(scene.width, scene.height) / max_size)
    return max(1, round(scene.height / factor)), max(1, round(scene.width / factor))


def read_decimated(scene: Scene, bands: tuple[str, ...], max_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The whole scene read at most ``max_size`` pixels a side (overviews, previews, scene-wide statistics).

    A scene with unreadable blocks (a corrupt block fails only its own tiles) is read again in pieces, and the
    pieces that cannot be read are nodata, with a warning.
    """
    window, shape = Window(0, 0, scene.width, scene.height), overview_shape(scene, max_size)
    try:
        return read_window(scene, window, bands, out_shape=shape)
    except InputError as err:
        log.warning("the whole-scene read failed (%s); reading it in pieces, unreadable ones as nodata", err)
    return _read_in_strips(scene, bands, shape)


def _read_in_strips(
    scene: Scene, bands: tuple[str, ...], shape: tuple[int, int], chunk: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_decimated` in pieces of ``chunk`` x ``chunk`` output pixels; a piece that cannot be read is
    nodata."""
    rows, cols = shape
    pixels = np.zeros((len(bands), rows, cols), np.float32)
    valid = np.zeros((rows, cols), bool)
    lost = 0
    for r0 in range(0, rows, chunk):
        r1, top = min(rows, r0 + chunk), round(r0 * scene.height / rows)
        bottom = round(r1 * scene.height / rows)
        for c0 in range(0, cols, chunk):
            c1, left = min(cols, c0 + chunk), round(c0 * scene.width / cols)
            window = Window(left, top, round(c1 * scene.width / cols) - left, bottom - top)
            try:  # files opened per piece: a dataset that failed a read may fail the next ones
                part = read_window(scene, window, bands, out_shape=(r1 - r0, c1 - c0))
            except InputError:
                lost += 1
                continue
            pixels[:, r0:r1, c0:c1], valid[r0:r1, c0:c1] = part
    if lost:
        log.warning("%d pieces of the whole-scene read are unreadable: nodata there", lost)
    return pixels, valid


def read_overview(scene: Scene, bands: tuple[str, ...], max_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_decimated`, with an InputError when no pixel is valid (statistics need some)."""
    pixels, valid = read_decimated(scene, bands, max_size)
    if not valid.any():
        raise InputError("the inputs hold no valid pixels inside the scene/AOI: check nodata and the AOI")
    return pixels, valid


def scene_percentiles(scene: Scene, bands: tuple[str, ...], max_size: int = 1024) -> dict[str, np.ndarray]:
    """Percentiles 0..100 of each band's valid pixels over a decimated whole-scene read (for scene-wide stretches)."""
    pixels, valid = read_overview(scene, bands, max_size)
    return {name: np.percentile(pixels[i][valid], np.arange(101)) for i, name in enumerate(bands)}
