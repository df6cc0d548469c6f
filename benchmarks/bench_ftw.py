"""FTW on geoseg's actors: driver and model-actor memory (and time) against scene size, CPU, random weights.

    python benchmarks/bench_ftw.py                                  # 1024^2 and 2048^2 (1x, 4x), 512 px tiles
    python benchmarks/bench_ftw.py --base 1024 --scales 1 4 16 --json /tmp/ftw.json

Runs :mod:`bench_scale`'s measurement (a fresh ``geoseg.cli run`` subprocess per scale, the PSS of its whole process
tree sampled from outside, per role: driver, model actor, task workers, Ray) on its synthetic field scene, with the
field model replaced by an ``ftw`` U-Net (ftw-3class: efficientnet-b3, 8 inputs; the scene's red and NIR fill the
four bands of each window, the same date twice). The weights are random (no real FTW weights can be downloaded
here), the last layer balanced on the scene's pixels (:mod:`geoseg.testutils.ftw`) so that the net answers a
patchwork of fields for the stitcher; the fields are not the scene's, so the object count is reported, not checked.
The figures to watch: the driver's and the model actor's peak PSS stay flat from 1x to 4x pixels.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import bench_scale  # the sibling script: run as python benchmarks/bench_ftw.py
import numpy as np
import rasterio
import yaml

from geoseg.models.ftw.variants import VARIANTS
from geoseg.testutils.ftw import random_ftw_state, write_ftw_checkpoint
from geoseg.testutils.scenes import FieldScene, field_job

WINDOW = ["red", "red", "red", "nir"]


def _checkpoint(scene: FieldScene, run_dir: Path) -> Path:
    variant = VARIANTS["ftw-3class"]
    with rasterio.open(scene.red) as red, rasterio.open(scene.nir) as nir:
        window = ((0, 256), (0, 256))
        r, n = red.read(1, window=window).astype(np.float32), nir.read(1, window=window).astype(np.float32)
    dn = np.stack([r, r, r, n])
    sample = np.concatenate([dn, dn]) / 3000  # reflectance * 10000 / 3000: the spec's default input_scale
    return write_ftw_checkpoint(run_dir / "ftw3.pth", variant, random_ftw_state(variant, 0, sample))


def write_ftw_job(scene: FieldScene, run_dir: Path, tile_size: int, halo: int) -> Path:
    """bench_scale's job on the scene, with an ``ftw`` model instead of the field regions."""
    spec: dict[str, Any] = field_job(scene, run_dir / "out.gpkg", tile_size=tile_size, batch_size=2)
    spec["compute"]["object_store_mb"] = 512
    spec["tiling"]["halo"] = halo
    spec["models"] = [
        {"type": "ftw", "name": "fields", "checkpoint": str(_checkpoint(scene, run_dir)), "windows": [WINDOW] * 2}
    ]
    path = run_dir / "job.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=1024, help="side of the 1x scene in pixels")
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4], help="pixel multiples: perfect squares")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/geoseg-bench-ftw"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    ns = argparse.Namespace(
        base=args.base, tile_size=args.tile_size, halo=66, cell=None, objects=False, side=0, workdir=args.workdir,
        interval=0.2, verbose_run=False,
    )  # fmt: skip
    args.workdir.mkdir(parents=True, exist_ok=True)
    bench_scale.write_job = write_ftw_job
    results = []
    for scale in args.scales:
        r = bench_scale.run_scale(ns, scale)
        actor = max((e["peak_pss"] for e in r["processes"].values() if "ModelActor" in str(e)), default=0.0)
        r["model_actor_peak_pss_mib"] = actor
        print(
            f"[{scale}x] {r['width']}^2 px, {r['tiles']} tiles, {r['objects']} fields: wall {r['wall_s']:.1f} s, "
            f"driver {r['driver_peak_pss_mib']:.0f} MiB PSS ({r['driver_hwm_mib']:.0f} MiB HWM, "
            f"{r['driver_cpu_s']:.0f} s CPU), model actor {actor:.0f} MiB PSS, "
            f"whole tree {r['peak_pss_mib']:.0f} MiB PSS",
            flush=True,
        )
        results.append({k: v for k, v in r.items() if k != "timeline"})
    print(bench_scale.table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
