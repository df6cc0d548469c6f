#!/usr/bin/env python
"""Regenerate ``jobs/aerial/naip_20100629.tif``: a crop of one NAIP date, the aerial sample of jobs/aerial_fields.yaml.

The source is ``m_4709963_se_14_1_20100629.tif`` of the project's aerial tune imagery (``../shared/data/naip_tune/``:
USDA NAIP, public domain, North Dakota prairie-pothole farmland, as published resampled to 5 m in the public GitHub
repository ``opengeos/data``): 4 bands red, green, blue, near-infrared, uint8 digital numbers without calibration,
EPSG:26914. The crop is one pixel-aligned window (no resampling; values, CRS and transform unchanged): bare,
stubble and green quarter-section fields, potholes with their wet-grass and cattail rings, a section road.

    python jobs/make_aerial_sample.py /work/shared/data/naip_tune/m_4709963_se_14_1_20100629.tif

Needs only rasterio.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import rasterio
from rasterio.windows import Window

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "aerial" / "naip_20100629.tif"
COL, ROW, WIDTH, HEIGHT = 20, 0, 380, 330
"""The crop in the source grid: the north part of the file (the tune part of the aerial reference)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    window = Window(COL, ROW, WIDTH, HEIGHT)
    with rasterio.open(args.source) as src:
        pixels = src.read(window=window)
        profile = {**src.profile, "width": WIDTH, "height": HEIGHT, "transform": src.window_transform(window)}
    profile.update(driver="GTiff", compress="deflate", predictor=2, zlevel=9, tiled=True, blockxsize=128,
                   blockysize=128, interleave="pixel")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(args.out, "w", **profile) as dst:
        dst.write(pixels)
    print(f"wrote {args.out} ({WIDTH} x {HEIGHT} px, {args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
