"""Quicklook cost against scene size: one decimated read, whatever the scene size.

    python benchmarks/bench_quicklook.py                       # 2048^2, 8192^2, 16384^2 synthetic scenes
    python benchmarks/bench_quicklook.py --sizes 1024 4096 --workdir /tmp/ql

Each synthetic field scene (``geoseg.testutils.scenes.write_field_scene``: red and NIR only, so the picture is
grey; tiled GeoTIFFs without overviews) is written into ``--workdir`` first (not timed). Timed: opening the scene,
the decimated read, rendering (outlines of the true fields, legend, scale bar) and writing the PNG.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import geopandas as gpd

from geoseg.export.quicklook import render, write_png
from geoseg.inputs.scene import open_scene
from geoseg.spec.job import InputSpec
from geoseg.testutils.scenes import write_field_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192, 16384])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/geoseg_bench_quicklook"))
    args = parser.parse_args()
    print(f"{'pixels':>14} {'fields':>7} {'seconds':>8}")
    for size in args.sizes:
        folder = args.workdir / str(size)
        scene_files = write_field_scene(folder, size, size, cell=150, seed=1)
        polygons = scene_files.truth_polygons()
        fields = gpd.GeoDataFrame({"verdict": ["healthy"] * len(polygons)}, geometry=polygons, crs=scene_files.crs)
        start = time.perf_counter()
        scene = open_scene(
            InputSpec(bands={"red": {"path": str(scene_files.red)}, "nir": {"path": str(scene_files.nir)}})
        )
        canvas = render(scene, {"fields": fields}, f"{size} px")
        write_png(canvas, folder / "quicklook.png", overwrite=True)
        print(f"{size:>6} x {size:<6} {len(fields):>7} {time.perf_counter() - start:>8.2f}")


if __name__ == "__main__":
    main()
