"""The field delineator follows metres, not pixels: the same aerial imagery resampled to 2 m and to 10 m gives the
same fields as at its own 5 m.

    python benchmarks/bench_field_resolution.py                       # the aerial tune dates, north part
    python benchmarks/bench_field_resolution.py --dates 20100629 --rows 340

Each NAIP date (``/work/shared/data/naip_tune/``, 4-band uint8, 5 m, digital numbers) is cut to its tune part (rows
above ``--rows``) and resampled with rasterio: to 2 m (bilinear: finer pixels, as an orthophoto would have them) and
to 10 m (average). The delineator runs in-process on each, as the plan would set it up (scene percentiles of that
version, digital numbers, the defaults), and the labels are compared on the 10 m grid (the 5 m and 2 m labels taken
at the centre of each 10 m cell). Printed per resolution against 5 m: the share of cells on which both agree that
they are field or not (``field agreement``), and the share of the 5 m field area whose field is matched, with an
IoU of at least ``--iou``, by one field of the other resolution (``fields matched``), with wall and CPU seconds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling

from geoseg.models.base import SceneInfo
from geoseg.models.fields.delineator import FieldDelineator
from geoseg.spec.job import FieldDelineatorSpec

NAIP = Path("/work/shared/data/naip_tune")
BANDS = ("green", "red", "nir")
FILE_BANDS = (2, 1, 4)
"""The NAIP file's band numbers of green, red, NIR."""


def read(date: str, rows: int, pixel_m: float) -> np.ndarray:
    """(3, H, W) green, red, NIR of the tune part of one date at ``pixel_m`` (5: as stored)."""
    with rasterio.open(NAIP / f"m_4709963_se_14_1_{date}.tif") as src:
        cols = src.width * 5 // 10 * 2  # a whole number of 10 m cells
        rows = rows // 2 * 2
        factor = 5.0 / pixel_m
        shape = (round(rows * factor), round(cols * factor))
        method = Resampling.bilinear if pixel_m < 5 else Resampling.average
        window = rasterio.windows.Window(0, 0, cols, rows)
        return src.read(FILE_BANDS, window=window, out_shape=(3, *shape), resampling=method).astype(np.float32)


def delineate(pixels: np.ndarray, pixel_m: float) -> np.ndarray:
    """Field labels, as a job on digital numbers would find them."""
    percentiles = {b: np.percentile(pixels[i], np.arange(101)) for i, b in enumerate(BANDS)}
    info = SceneInfo(BANDS, "", (pixel_m, pixel_m), pixel_m**2, percentiles, {}, reflectance=False)
    model = FieldDelineator(FieldDelineatorSpec(type="field_delineator", use_swir=False), pixel_m, info)
    labels = model.delineate(pixels, np.ones(pixels.shape[1:], bool)).labels
    sizes = np.bincount(labels.ravel())
    return np.where(sizes[labels] * pixel_m**2 >= 5000, labels, 0)  # the jobs' min_area_m2


def on_10m(labels: np.ndarray, pixel_m: float) -> np.ndarray:
    """Labels at the centre of each 10 m cell."""
    step = round(10 / pixel_m)
    return labels[step // 2 :: step, step // 2 :: step]


def matched_share(reference: np.ndarray, other: np.ndarray, iou: float) -> float:
    """Share of the reference's field area whose field has a counterpart in ``other`` with at least ``iou``."""
    total = matched = 0
    for label in np.unique(reference[reference > 0]):
        mine = reference == label
        ids, counts = np.unique(other[mine], return_counts=True)
        best = ids[np.argmax(counts)]
        total += int(mine.sum())
        if best > 0:
            theirs = other == best
            if (mine & theirs).sum() / (mine | theirs).sum() >= iou:
                matched += int(mine.sum())
    return matched / max(total, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dates", default="20100629,20150926")
    parser.add_argument("--rows", type=int, default=340, help="the tune part: rows of the 5 m file above this")
    parser.add_argument("--iou", type=float, default=0.8)
    args = parser.parse_args()
    print(f"{'date':9s} {'pixel':>6s} {'fields':>6s} {'field agreement':>16s} {'fields matched':>15s} wall s  CPU s")
    for date in args.dates.split(","):
        results = {}
        for pixel_m in (5.0, 2.0, 10.0):
            pixels = read(date, args.rows, pixel_m)
            wall, cpu = time.perf_counter(), time.process_time()
            labels = delineate(pixels, pixel_m)
            results[pixel_m] = (on_10m(labels, pixel_m), time.perf_counter() - wall, time.process_time() - cpu)
        base = results[5.0][0]
        for pixel_m, (labels, wall, cpu) in results.items():
            rows, cols = min(base.shape[0], labels.shape[0]), min(base.shape[1], labels.shape[1])
            a, b = base[:rows, :cols], labels[:rows, :cols]
            agree = float(((a > 0) == (b > 0)).mean())
            count = len(np.unique(b[b > 0]))
            print(f"{date:9s} {pixel_m:5.0f}m {count:6d} {agree:16.3f} {matched_share(a, b, args.iou):15.3f} "
                  f"{wall:6.2f} {cpu:6.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
