"""Cloud-Optimized GeoTIFFs written window by window.

:class:`CogWriter` streams windows into a temporary tiled GeoTIFF (ZSTD level 1: as fast to write as no
compression, and small on disk; GDAL keeps only a block cache in memory, never the whole raster), builds its
overviews on all CPUs, converts it with GDAL's COG driver (DEFLATE) and renames the result onto the final
path. A failure removes the temporary files and leaves an existing output untouched. Windows aligned to
``blocksize`` are the cheapest: a block is then compressed once.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import ColorInterp, Resampling
from rasterio.io import DatasetWriter
from rasterio.windows import Window

from geoseg.atomic import atomic_output, check_output_absent, remove_temp, temp_path
from geoseg.inputs.grid import SceneGrid

__all__ = ["CogWriter"]

_COLORMAP_DTYPES = ("uint8", "uint16")  # GeoTIFF palettes exist for these only


class CogWriter:
    """Write one single-band raster window by window, then publish it as a COG.

    Use as a context manager::

        with CogWriter(path, scene.grid, dtype="uint8", nodata=0,
                       colormap={1: (0, 128, 0, 255)}) as cog:
            for window, block in blocks:
                cog.write(block, window)

    Args:
        path: The ``.tif`` to write.
        grid: The raster's grid (CRS, transform, size): the scene's.
        dtype: Pixel type (``"uint8"`` class rasters, ``"uint32"`` id rasters, ...).
        nodata: Nodata value, or None. Pixels never written read as nodata (0 when None).
        colormap: Class value -> RGBA colour table (uint8 / uint16 only).
        overwrite: Replace an existing ``path``.
        overview_resampling: Resampling of overviews (``"nearest"`` or ``"mode"`` for classes and ids).
        blocksize: Tile size in pixels, a multiple of 16.
        band_description: Band name shown in GIS software.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is false (raised on creation, before any work).
        ValueError: An argument is out of range.
    """

    def __init__(
        self,
        path: Path,
        grid: SceneGrid,
        *,
        dtype: str,
        nodata: float | int | None,
        colormap: Mapping[int, tuple[int, int, int, int]] | None = None,
        overwrite: bool = False,
        overview_resampling: str = "nearest",
        blocksize: int = 512,
        band_description: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.width, self.height = int(grid.width), int(grid.height)
        self.transform = grid.transform
        self.crs = grid.crs
        self.dtype = np.dtype(dtype).name
        self.nodata = nodata
        self.colormap = dict(colormap) if colormap else None
        self.overwrite = overwrite
        self.resampling = _resampling(overview_resampling)
        self.blocksize = int(blocksize)
        self.band_description = band_description
        self._check_args()
        check_output_absent(self.path, overwrite)
        self._tmp = temp_path(self.path, ".tif")
        self._dst: DatasetWriter | None = None

    # ----------------------------------------------------------------------------------------- context
    def __enter__(self) -> CogWriter:
        """Create the temporary tiled GeoTIFF."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._dst = rasterio.open(self._tmp, "w", **self._profile())
        try:
            if self.colormap:
                self._dst.write_colormap(1, self.colormap)
                self._dst.colorinterp = [ColorInterp.palette]
            if self.band_description:
                self._dst.set_band_description(1, self.band_description)
        except BaseException:
            self._abort()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """On success build overviews, convert to COG and rename onto ``path``; always remove temporaries."""
        try:
            if exc_type is None:
                self._publish()
        finally:
            self._abort()

    # ----------------------------------------------------------------------------------------- writing
    def write(self, array: np.ndarray, window: Window) -> None:
        """Write a 2-D array into ``window`` (pixel offsets of the full raster).

        Raises:
            RuntimeError: The writer is not open (use it as a context manager).
            ValueError: The window leaves the raster, the array's shape differs from the window's, or its
                values do not fit the raster's dtype.
        """
        if self._dst is None:
            raise RuntimeError("CogWriter.write needs an open writer: use `with CogWriter(...) as cog:`")
        window = _int_window(window)
        if (
            window.col_off < 0
            or window.row_off < 0
            or window.col_off + window.width > self.width
            or window.row_off + window.height > self.height
        ):
            raise ValueError(f"window {window} leaves the {self.width}x{self.height} raster")
        array = np.asarray(array)
        if array.shape != (window.height, window.width):
            raise ValueError(f"array shape {array.shape} does not match window {window.height}x{window.width}")
        self._dst.write(_fit_dtype(array, self.dtype), 1, window=window)

    # ----------------------------------------------------------------------------------------- internals
    def _check_args(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"raster size must be positive, got {self.width}x{self.height}")
        if self.blocksize <= 0 or self.blocksize % 16:
            raise ValueError(f"blocksize must be a positive multiple of 16, got {self.blocksize}")
        if self.colormap and self.dtype not in _COLORMAP_DTYPES:
            raise ValueError(f"a colour table needs a uint8 or uint16 raster, not {self.dtype}")
        if self.nodata is not None and not _fits(np.asarray([self.nodata]), self.dtype):
            raise ValueError(f"nodata {self.nodata} does not fit dtype {self.dtype}")

    def _profile(self) -> dict[str, object]:
        return {
            "driver": "GTiff",
            "width": self.width,
            "height": self.height,
            "count": 1,
            "dtype": self.dtype,
            "crs": self.crs,
            "transform": self.transform,
            "nodata": self.nodata,
            "tiled": True,
            "blockxsize": self.blocksize,
            "blockysize": self.blocksize,
            "compress": "ZSTD",  # the temporary file only: the COG is DEFLATE (_cog_options)
            "zstd_level": 1,
            "bigtiff": "IF_SAFER",
            "photometric": "PALETTE" if self.colormap else "MINISBLACK",
        }

    def _publish(self) -> None:
        dst = self._dst
        if dst is None:
            raise RuntimeError("CogWriter was not opened")
        factors = overview_factors(self.width, self.height, self.blocksize)
        if factors:
            with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):  # mode overviews are the costliest step
                dst.build_overviews(factors, self.resampling)
            dst.update_tags(ns="rio_overview", resampling=self.resampling.name)
        dst.close()
        self._dst = None
        with atomic_output(self.path, self.overwrite) as tmp_cog:
            rasterio.shutil.copy(self._tmp, tmp_cog, driver="COG", **self._cog_options())

    def _cog_options(self) -> dict[str, str]:
        return {
            "BLOCKSIZE": str(self.blocksize),
            "COMPRESS": "DEFLATE",
            "PREDICTOR": "NO" if self.colormap else "STANDARD",
            "BIGTIFF": "IF_SAFER",
            "OVERVIEWS": "FORCE_USE_EXISTING",
            "NUM_THREADS": "ALL_CPUS",
        }

    def _abort(self) -> None:
        if self._dst is not None:
            with contextlib.suppress(Exception):
                self._dst.close()
            self._dst = None
        remove_temp(self._tmp)


def overview_factors(width: int, height: int, blocksize: int) -> list[int]:
    """Overview decimation factors 2, 4, 8, ... until the smallest level fits in one block."""
    levels = max(0, math.ceil(math.log2(max(width, height) / blocksize)))
    return [2**level for level in range(1, levels + 1)]


def _resampling(name: str) -> Resampling:
    try:
        return Resampling[name.lower()]
    except KeyError:
        choices = ", ".join(r.name for r in Resampling)
        raise ValueError(f"unknown overview resampling {name!r}; choose one of {choices}") from None


def _int_window(window: Window) -> Window:
    """The window with integer offsets and sizes (tile windows are whole pixels)."""
    parts = (window.col_off, window.row_off, window.width, window.height)
    if any(float(p) != int(p) for p in parts):
        raise ValueError(f"window {window} must have whole-pixel offsets and sizes")
    return Window(*(int(p) for p in parts))


def _fits(array: np.ndarray, dtype: str) -> bool:
    """Whether ``array``'s values survive a cast to ``dtype`` (ints range-checked; floats never fit ints)."""
    target = np.dtype(dtype)
    if array.size == 0 or np.can_cast(array.dtype, target, casting="safe") or target.kind == "f":
        return True
    if target.kind in "iu" and array.dtype.kind in "iub":
        info = np.iinfo(target)
        return bool(info.min <= array.min() and array.max() <= info.max)
    return False


def _fit_dtype(array: np.ndarray, dtype: str) -> np.ndarray:
    if array.dtype == dtype:
        return array
    if not _fits(array, dtype):
        raise ValueError(f"values of dtype {array.dtype} do not fit the raster's dtype {dtype}")
    return array.astype(dtype, copy=False)
