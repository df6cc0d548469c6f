"""Tiny GeoTIFFs with a real CRS, written in code: the fixtures of the raster and pipeline tests.

``write_raster(path, array)`` writes a (rows, cols) or (bands, rows, cols) array as a GeoTIFF in EPSG:32633 (UTM 33N)
at 10 m by default; ``utm_transform`` builds north-up transforms on the same origin so that files at different
resolutions line up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

UTM_CRS = "EPSG:32633"
"""Default CRS of the test rasters: WGS 84 / UTM zone 33N."""
ORIGIN = (500_000.0, 5_000_000.0)
"""Default top-left corner (x, y) of the test rasters, in UTM 33N metres (about 45.1° N, 15° E)."""


def utm_transform(res: float = 10.0, x0: float = ORIGIN[0], y0: float = ORIGIN[1]) -> Affine:
    """North-up transform of ``res``-metre pixels whose top-left corner is (x0, y0)."""
    return Affine(res, 0.0, x0, 0.0, -res, y0)


def write_raster(
    path: str | Path,
    array: np.ndarray,
    transform: Affine | None = None,
    crs: str | None = UTM_CRS,
    nodata: float | None = None,
    mask: np.ndarray | None = None,
) -> Path:
    """Write a GeoTIFF and return its path.

    Args:
        path: file to write (its folder must exist).
        array: (rows, cols) for one band or (bands, rows, cols); its dtype is the file's dtype.
        transform: pixel grid; default 10 m pixels from :data:`ORIGIN`.
        crs: CRS in any form rasterio understands; None writes a file without a CRS.
        nodata: the file's nodata value; None for none.
        mask: optional (rows, cols) bool array, True where valid, written as the file's internal per-dataset mask.
    """
    data = np.asarray(array)
    if data.ndim == 2:
        data = data[np.newaxis]
    if data.ndim != 3:
        raise ValueError(f"array must be 2-D or 3-D, got shape {data.shape}")
    count, rows, cols = data.shape
    profile = {
        "driver": "GTiff",
        "width": cols,
        "height": rows,
        "count": count,
        "dtype": data.dtype,
        "transform": transform if transform is not None else utm_transform(),
        "nodata": nodata,
    }
    if crs is not None:
        profile["crs"] = crs
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if mask is not None:
            dst.write_mask(np.asarray(mask, bool).astype(np.uint8) * 255)
    return Path(path)


def ramp(rows: int, cols: int, dtype: str = "uint16", start: int = 1) -> np.ndarray:
    """A (rows, cols) array counting up row by row from ``start``: every pixel has its own value."""
    return (np.arange(rows * cols, dtype=np.int64).reshape(rows, cols) + start).astype(dtype)
