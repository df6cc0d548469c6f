"""Bands of one file on a window's grid: every band a read needs from the file in one call (a pixel-interleaved
file decodes each block once, not once per band), windows past the file's edge read without GDAL's boundless VRT,
and masks read only when the file has a real mask (an alpha band or a per-dataset mask; a nodata value or no mask
at all is checked on the values).

:class:`OpenFiles` keeps datasets open between reads in one process, so a worker neither reopens the files nor
loses GDAL's decoded blocks (a tile's halo shares blocks with its neighbours) between tiles.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

READ_CACHE_MB = 64
"""GDAL's block cache in a read task's process (tiles come in any order: little to share)."""


def strip_cache_mb(paths: Sequence[str], rows: int, cols: int, floor_mb: int = 32, cap_mb: int = 1024) -> int:
    """GDAL's block cache that holds a ``rows`` x ``cols`` pixel band of each file, widened by a block on each side
    (all of a file's bands: a pixel-interleaved block is cached whole): what a tile worker's strip needs so the
    blocks a tile shares with its left and upper neighbours are still decoded. Grows with the strip's width, never
    with the scene's height."""
    total = 0
    for path in dict.fromkeys(paths):
        with rasterio.open(path) as src:
            block_rows, block_cols = src.block_shapes[0]
            pixel_bytes = sum(np.dtype(dtype).itemsize for dtype in src.dtypes)
        total += (rows + 2 * block_rows) * (cols + 2 * block_cols) * pixel_bytes
    return int(min(cap_mb, max(floor_mb, total / 2**20)))


@dataclass(frozen=True)
class GridRead:
    """What to read: the window's grid, and how the scene treats nodata and resampling."""

    crs: CRS
    transform: Affine
    shape: tuple[int, int]
    nodata: float | None
    """The spec's nodata (replaces each file's own), or None."""
    resampling: str


class OpenFiles:
    """Datasets kept open between reads (the ``size`` most recently used); a local file that changed on disk
    (mtime, size or inode) is opened afresh."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._open: OrderedDict[str, tuple[tuple[int, ...], DatasetReader]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str) -> DatasetReader:
        key = _identity(path)
        with self._lock:
            entry = self._open.pop(path, None)
            if entry is not None and entry[0] == key and not entry[1].closed:
                self._open[path] = entry
                return entry[1]
            if entry is not None:
                entry[1].close()
            src = rasterio.open(path)
            self._open[path] = (key, src)
            while len(self._open) > self.size:
                self._open.popitem(last=False)[1][1].close()
            return src

    def drop(self, path: str) -> None:
        """Close a file (after an error reading it)."""
        with self._lock:
            entry = self._open.pop(path, None)
        if entry is not None:
            entry[1].close()

    def close(self) -> None:
        with self._lock:
            for _, src in self._open.values():
                src.close()
            self._open.clear()


def _identity(path: str) -> tuple[int, ...]:
    """A local file's (mtime, size, inode); () for a remote one (``/vsi...``, URLs): kept as long as it is open."""
    if path.startswith("/vsi") or "://" in path:
        return ()
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


@contextmanager
def opened(path: str, files: OpenFiles | None) -> Iterator[DatasetReader]:
    """A dataset: from ``files`` (kept open), or opened for this read and closed after it."""
    if files is None:
        with rasterio.open(path) as src:
            yield src
        return
    try:
        yield files.get(path)
    except BaseException:
        files.drop(path)  # a failed read may leave the dataset in a bad state
        raise


def same_grid(src: DatasetReader, crs: CRS, transform: Affine) -> bool:
    """True when the file's pixels are the window's pixels (same CRS, pixel size and alignment)."""
    t = src.transform
    if src.crs != crs or not np.allclose([t.a, t.b, t.d, t.e], [transform.a, transform.b, transform.d, transform.e]):
        return False
    col, row = ~t @ (transform.c, transform.f)
    return abs(col - round(col)) < 1e-6 and abs(row - round(row)) < 1e-6


def read_bands(src: DatasetReader, indexes: Sequence[int], grid: GridRead) -> tuple[np.ndarray, np.ndarray]:
    """Bands ``indexes`` of one file on the window grid: (values (k, H, W) in the file's dtype, valid (k, H, W)).

    Invalid: outside the file, masked by its mask or alpha band, equal to the nodata value (the spec's, else the
    file's), NaN or infinite.
    """
    nodata = grid.nodata if grid.nodata is not None else src.nodata
    if same_grid(src, grid.crs, grid.transform):
        data, valid = _read_aligned(src, list(indexes), grid)
    else:
        data, valid = _read_warped(src, list(indexes), grid, nodata)
    if nodata is not None and not np.isnan(nodata):
        valid &= data != nodata
    if data.dtype.kind == "f":  # NaN and inf are nodata, whatever the file says
        valid &= np.isfinite(data)
    return data, valid


def _read_aligned(src: DatasetReader, indexes: list[int], grid: GridRead) -> tuple[np.ndarray, np.ndarray]:
    """The file's own pixels: the part of the window inside the file, the rest invalid (no boundless VRT)."""
    rows, cols = grid.shape
    col, row = (round(v) for v in ~src.transform @ (grid.transform.c, grid.transform.f))
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + rows, src.height), min(col + cols, src.width)
    if r0 == row and c0 == col and r1 == row + rows and c1 == col + cols:  # all inside: read straight
        win = Window(col, row, cols, rows)
        return src.read(indexes, window=win), _masks(src, indexes, win, grid.nodata)
    data = np.zeros((len(indexes), rows, cols), src.dtypes[indexes[0] - 1])
    valid = np.zeros((len(indexes), rows, cols), bool)
    if r0 < r1 and c0 < c1:
        win = Window(c0, r0, c1 - c0, r1 - r0)
        inner = (slice(None), slice(r0 - row, r1 - row), slice(c0 - col, c1 - col))
        data[inner] = src.read(indexes, window=win)
        valid[inner] = _masks(src, indexes, win, grid.nodata)
    return data, valid


def _masks(src: DatasetReader, indexes: list[int], win: Window, spec_nodata: float | None) -> np.ndarray:
    """Valid per band by the file's mask: all valid without one, or with only a nodata value (checked on the
    values by the caller: the spec's nodata replaces the file's); the mask band otherwise (read once when the
    mask is the dataset's)."""
    shape = (len(indexes), int(win.height), int(win.width))
    valid = np.ones(shape, bool)
    shared: np.ndarray | None = None
    for i, index in enumerate(indexes):
        flags = src.mask_flag_enums[index - 1]
        if MaskFlags.all_valid in flags or MaskFlags.nodata in flags:
            continue
        if MaskFlags.per_dataset in flags:
            shared = src.read_masks(index, window=win) > 0 if shared is None else shared
            valid[i] = shared
        else:
            valid[i] = src.read_masks(index, window=win) > 0
    return valid


def _read_warped(
    src: DatasetReader, indexes: list[int], grid: GridRead, nodata: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """A file on another grid (CRS, pixel size or alignment), resampled onto the window's."""
    rows, cols = grid.shape
    with WarpedVRT(
        src,
        crs=grid.crs,
        transform=grid.transform,
        width=cols,
        height=rows,
        resampling=Resampling[grid.resampling],
        src_nodata=nodata,
        # an alpha band marks what the file does not cover (and its internal mask); without it those pixels
        # read as valid zeros when there is no nodata value. A file with its own alpha band carries it over.
        add_alpha=ColorInterp.alpha not in src.colorinterp,
    ) as vrt:
        data = vrt.read(indexes)
        valid = np.stack([vrt.read_masks(index) > 0 for index in indexes])
    return data, valid
