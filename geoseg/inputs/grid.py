"""How the scene grid is chosen from the input files' headers: the CRS, the pixel size, where every band has data.

No pixels are read; :func:`geoseg.inputs.scene.open_scene` builds the :class:`~geoseg.inputs.scene.Scene` from these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import rasterio
import shapely
from affine import Affine
from pyproj import CRS as ProjCRS
from pyproj import Geod
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform_bounds

from geoseg.errors import InputError


@dataclass(frozen=True)
class BandSource:
    """A named band: band ``index`` of each file in ``paths`` (several files form a mosaic)."""

    name: str
    paths: tuple[str, ...]
    index: int


@dataclass(frozen=True)
class FileInfo:
    """A raster file's header: what the grid is chosen from."""

    path: str
    crs: CRS
    transform: Affine
    bounds: tuple[float, float, float, float]
    count: int


def file_info(path: str) -> FileInfo:
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise InputError(f"{path} has no CRS: assign one (gdal_edit.py -a_srs EPSG:...) before running")
            return FileInfo(path, src.crs, src.transform, tuple(src.bounds), src.count)
    except rasterio.RasterioIOError as err:
        raise InputError(f"cannot open input raster {path}: {err}") from None


def aligned_grid(ref: FileInfo, res: float, bounds: tuple[float, float, float, float]) -> tuple[Affine, int, int]:
    """A north-up grid of pixel size ``res`` covering ``bounds``, aligned to the reference file's pixel edges."""
    x0, y0 = ref.transform.c, ref.transform.f
    left = x0 + math.floor((bounds[0] - x0) / res + 1e-9) * res
    top = y0 - math.floor((y0 - bounds[3]) / res + 1e-9) * res
    width = math.ceil((bounds[2] - left) / res - 1e-9)
    height = math.ceil((top - bounds[1]) / res - 1e-9)
    return Affine(res, 0, left, 0, -res, top), width, height


def scene_crs(chosen: str | None, infos: dict[str, FileInfo]) -> CRS:
    """``inputs.crs`` if given, else the CRS of the finest file (pixel sizes compared in one CRS)."""
    if chosen:
        try:
            return CRS.from_user_input(chosen)
        except CRSError:
            raise InputError(f"inputs.crs {chosen!r} is not a known CRS: use an EPSG code, e.g. EPSG:32633") from None
    files = list(infos.values())
    common = files[0].crs
    return min(files, key=lambda i: abs(i.transform.a) if i.crs == common else native_res(i, common)).crs


def footprint(info: FileInfo, crs: CRS) -> shapely.Geometry:
    return shapely.box(*(transform_bounds(info.crs, crs, *info.bounds) if info.crs != crs else info.bounds))


def common_area(sources: Sequence[BandSource], infos: dict[str, FileInfo], crs: CRS) -> shapely.Geometry:
    """Where every band has data: each band's files unioned (a mosaic), the bands intersected."""
    area: shapely.Geometry | None = None
    for i, band in enumerate(sources):
        covered = shapely.union_all([footprint(infos[p], crs) for p in band.paths])
        area = covered if area is None else area.intersection(covered)
        if area.area <= 0:
            others = ", ".join(repr(b.name) for b in sources[:i])
            raise InputError(
                f"band {band.name!r} ({', '.join(band.paths)}) does not overlap band(s) {others}: the scene is "
                "where every band has data; give files that cover the same area (check their CRS)"
            )
    assert area is not None  # a spec has at least one band
    return area


def native_res(info: FileInfo, crs: CRS) -> float:
    from rasterio.warp import calculate_default_transform

    w = round((info.bounds[2] - info.bounds[0]) / abs(info.transform.a))
    h = round((info.bounds[3] - info.bounds[1]) / abs(info.transform.e))
    transform, _, _ = calculate_default_transform(info.crs, crs, w, h, *info.bounds)
    return abs(transform.a)


def to_crs(geom: shapely.Geometry, src: str, dst: CRS) -> shapely.Geometry:
    from pyproj import Transformer
    from pyproj.exceptions import CRSError as ProjCRSError

    try:
        src_crs = ProjCRS.from_user_input(src)
    except ProjCRSError:
        raise InputError(f"aoi.crs {src!r} is not a known CRS: use an EPSG code, e.g. EPSG:4326") from None
    transformer = Transformer.from_crs(src_crs, ProjCRS.from_wkt(dst.to_wkt()), always_xy=True)
    return shapely.transform(geom, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))


@dataclass(frozen=True)
class SceneGrid:
    """The scene's pixel grid: CRS (parsed once, for rasterio and for pyproj), affine transform and size."""

    crs_wkt: str
    transform: Affine
    width: int
    height: int

    @cached_property
    def crs(self) -> CRS:
        """The CRS for rasterio / GDAL."""
        return CRS.from_wkt(self.crs_wkt)

    @cached_property
    def proj(self) -> ProjCRS:
        """The CRS for pyproj / geopandas (units, geodesic areas)."""
        return ProjCRS.from_wkt(self.crs_wkt)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols)."""
        return self.height, self.width

    @property
    def pixel_size(self) -> tuple[float, float]:
        return abs(self.transform.a), abs(self.transform.e)

    @cached_property
    def pixel_area_m2(self) -> float:
        """Area of one pixel in m² (geodesic, at the scene centre, for geographic CRSs)."""
        w, h = self.pixel_size
        if not self.proj.is_geographic:
            factor = self.proj.axis_info[0].unit_conversion_factor
            return w * h * factor * factor
        x, y = self.transform @ (self.width / 2, self.height / 2)
        cell = shapely.box(x, y, x + w, y + h)
        area, _ = Geod(ellps="WGS84").geometry_area_perimeter(cell)
        return abs(area)
