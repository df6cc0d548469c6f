"""Outlines a user would draw: vertices per km of field outline with and without coverage simplification.

    python benchmarks/bench_outline.py jobs/aerial_fields.yaml jobs/sample_fields.yaml --simplify 0,5,10

Each job runs (``python -m geoseg.cli run``, a fresh process) once per tolerance, ``output.simplify`` set to it
(metres; 0: exact pixel edges), into a temp folder. Printed per job and tolerance: fields, vertices per km of
outline (exterior and interior rings, each ring's closing vertex not counted), the outline's length, and whether
the layer is still one coverage (``shapely.coverage_is_valid``: shared edges shared, no overlaps), with the wall
seconds of the run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import shapely
import yaml

ROOT = Path(__file__).resolve().parent.parent


def vertices_per_km(fields: gpd.GeoDataFrame) -> tuple[float, float]:
    """(vertices per km of outline, outline km) of a polygon layer in a metric CRS."""
    rings = shapely.get_rings(shapely.get_parts(fields.geometry.values))
    vertices = int((shapely.get_num_coordinates(rings) - 1).sum())
    km = float(shapely.length(rings).sum()) / 1000
    return vertices / max(km, 1e-9), km


def run(job: Path, tolerance: float, folder: Path) -> tuple[gpd.GeoDataFrame, float]:
    """The job's field layer with ``output.simplify`` set to ``tolerance``, and the run's wall seconds."""
    raw = yaml.safe_load(job.read_text())
    raw["output"] = {**raw["output"], "path": str(folder / f"{job.stem}_{tolerance:g}.gpkg"), "simplify": tolerance}
    raw["output"].pop("crs", None)  # measure in the scene's metric CRS
    for key in ("files",):
        if key in raw["inputs"]:
            raw["inputs"][key] = [str((job.parent / p).resolve()) for p in raw["inputs"][key]]
    for band in (raw["inputs"].get("bands") or {}).values():
        band["path"] = str((job.parent / band["path"]).resolve())
    if "mask" in raw["inputs"]:
        raw["inputs"]["mask"]["path"] = str((job.parent / raw["inputs"]["mask"]["path"]).resolve())
    spec = folder / f"{job.stem}_{tolerance:g}.yaml"
    spec.write_text(yaml.safe_dump(raw))
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "geoseg.cli", "run", str(spec), "--overwrite", "--no-progress"]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    return gpd.read_file(raw["output"]["path"], layer="fields"), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("jobs", nargs="+", type=Path)
    parser.add_argument("--simplify", default="0,5")
    args = parser.parse_args()
    print(f"{'job':22s} {'simplify m':>10s} {'fields':>6s} {'vertices/km':>11s} {'outline km':>10s} coverage  wall s")
    with tempfile.TemporaryDirectory(prefix="bench_outline_") as tmp:
        for job in args.jobs:
            for tolerance in (float(t) for t in args.simplify.split(",")):
                fields, wall = run(job, tolerance, Path(tmp))
                density, km = vertices_per_km(fields)
                coverage = bool(shapely.coverage_is_valid(fields.geometry.values))
                print(f"{job.stem:22s} {tolerance:10g} {len(fields):6d} {density:11.1f} {km:10.1f} "
                      f"{'valid' if coverage else 'BROKEN':8s} {wall:6.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
