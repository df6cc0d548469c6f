#!/usr/bin/env python
"""Draw the sample job's field outlines over a false-colour picture of the sample: ``jobs/sample/fields_preview.png``.

    geoseg run jobs/sample_fields.yaml --overwrite && python jobs/fields_preview.py

False colour (NIR, red, green: crops pink, bare soil grey-brown, woods dark red, water black-blue) with each
field's outline in yellow (from the ``fields`` id raster, ``out/sample_fields_fields.tif``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from skimage.segmentation import find_boundaries

HERE = Path(__file__).resolve().parent


def false_colour(folder: Path) -> np.ndarray:
    """NIR, red, green stretched to 8 bits (1-99.5 percentiles), (H, W, 3)."""
    channels = []
    for band in ("B08", "B04", "B03"):
        with rasterio.open(folder / f"{band}.tif") as ds:
            x = ds.read(1).astype(np.float32)
        lo, hi = np.percentile(x, (1, 99.5))
        channels.append(np.clip((x - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8))
    return np.stack(channels, axis=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=Path, default=HERE.parent / "out" / "sample_fields_fields.tif")
    parser.add_argument("--out", type=Path, default=HERE / "sample" / "fields_preview.png")
    args = parser.parse_args()
    image = false_colour(HERE / "sample")
    with rasterio.open(args.ids) as ds:
        ids = ds.read(1)
    outlined = image.copy()
    outlined[find_boundaries(ids, mode="inner") & (ids > 0)] = (255, 255, 0)
    # 64 colours: a quarter of the bytes, no visible loss in a preview.
    Image.fromarray(outlined).quantize(64).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
