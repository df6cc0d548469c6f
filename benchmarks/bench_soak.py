"""Soak: a job of >= 2,000 tiles while its model actor is killed every few seconds. Is anything lost or doubled?

    python benchmarks/bench_soak.py                       # 2,025 tiles (2,880^2 px, 64 px tiles), a kill every 3 s
    python benchmarks/bench_soak.py --side 1024 --kill-every 2 --json /tmp/soak.json      # quick check

A synthetic field scene (``geoseg.testutils.scenes.write_field_scene``) is written once into ``--workdir``. After
an untimed warm-up run on a small scene, one embedded Ray (``--cpus``, logical) serves two runs of the same
``field_regions`` job on ``--actors`` model actors:

1. **clean**: no faults; the reference and the baseline time;
2. **faulted**: every ``--kill-every`` seconds a thread SIGKILLs one working ``ray::ModelActor`` process: the
   oldest one not still loading its models (on a loaded machine a restart can take longer than the interval, and
   killing actors before they ever work would only measure a crash loop), and only this process's descendants.
   Ray restarts the actor (models reload) and reruns the batch it held; the driver retries what still fails
   (``compute.max_retries``, raised here so that a tile hit several times is not given up).

Printed (and in ``--json``):

- **tiles lost**: tiles of the faulted run not ``done`` in its tile index (must be 0);
- **tiles done twice in the output**: duplicate tile ids in the tile index, plus objects whose geometry or
  attributes differ from the clean run, plus pixels of the id raster that differ (all must be 0);
- **tiles recomputed**: tiles the driver had to submit again (``attempts`` > 1); batches Ray reran on the
  restarted actor by itself are not counted there;
- **time overhead**: faulted over clean wall time, with the number of kills.

The machine it runs on is shared with other work unless you make sure otherwise: times are indicative.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio

from geoseg.pipeline import run_job
from geoseg.spec.job import parse_spec
from geoseg.testutils.faults import kill_model_actors
from geoseg.testutils.scenes import FieldScene, field_job, write_field_scene


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=2880, help="scene side in pixels (2880 / 64 = 45^2 tiles)")
    parser.add_argument("--tile-size", type=int, default=64)
    parser.add_argument("--kill-every", type=float, default=3.0, help="seconds between actor kills")
    parser.add_argument("--cpus", type=int, default=4, help="logical CPUs of the embedded Ray")
    parser.add_argument("--actors", type=int, default=2, help="model actors; one (the oldest) is killed each time")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/geoseg-soak"))
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser.parse_args()


def _run(scene: FieldScene, out: Path, args: argparse.Namespace, kill_every: float | None) -> dict[str, Any]:
    raw = field_job(
        scene, out, tile_size=args.tile_size, batch_size=args.batch_size, actors=args.actors, max_retries=10
    )
    kills: list[int] = []
    stop = threading.Event()

    def killer() -> None:
        while kill_every and not stop.wait(kill_every):
            kills.extend(kill_model_actors(limit=1, working_only=True))

    thread = threading.Thread(target=killer, daemon=True)
    start = time.perf_counter()
    thread.start()
    try:
        result = run_job(parse_spec(raw), overwrite=True, progress=False)
    finally:
        stop.set()
        thread.join()
    return {"seconds": time.perf_counter() - start, "kills": len(kills), "tiles": result.tiles_done}


def _compare(faulted: Path, clean: Path) -> dict[str, int]:
    tiles = gpd.read_file(faulted, layer="tiles")
    a = gpd.read_file(faulted, layer="fields").sort_values("id").reset_index(drop=True)
    b = gpd.read_file(clean, layer="fields").sort_values("id").reset_index(drop=True)
    columns = [c for c in b.columns if c != "geometry"]
    if len(a) == len(b):
        same = a.geometry.geom_equals(b.geometry) & (a[columns] == b[columns]).all(axis=1)
        objects_differing = int((~same).sum())
    else:
        objects_differing = abs(len(a) - len(b)) + min(len(a), len(b))
    with (
        rasterio.open(faulted.with_name("faulted_fields.tif")) as x,
        rasterio.open(clean.with_name("clean_fields.tif")) as y,
    ):
        pixels_differing = int(np.count_nonzero(x.read(1) != y.read(1)))
    return {
        "tiles_total": len(tiles),
        "tiles_lost": int((tiles["status"] != "done").sum()),
        "duplicate_tile_ids": int(tiles["tile_id"].duplicated().sum()),
        "objects_differing": objects_differing,
        "id_pixels_differing": pixels_differing,
        "tiles_recomputed": int((tiles["attempts"] > 1).sum()),
    }


def main() -> None:
    args = _parse()
    import ray

    args.workdir.mkdir(parents=True, exist_ok=True)
    scene_dir = args.workdir / f"scene_{args.side}"
    scene = write_field_scene(scene_dir, args.side, args.side, cell=150, seed=11)
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    try:  # warm-up (not timed): Ray's pool of task workers starts here, not in the clean run
        _run(write_field_scene(args.workdir / "warmup", 256, 256, cell=150), args.workdir / "warmup.gpkg", args, None)
        clean = _run(scene, args.workdir / "clean.gpkg", args, None)
        faulted = _run(scene, args.workdir / "faulted.gpkg", args, args.kill_every)
    finally:
        ray.shutdown()
    figures = _compare(args.workdir / "faulted.gpkg", args.workdir / "clean.gpkg")
    overhead = faulted["seconds"] / clean["seconds"] - 1
    results = {"clean": clean, "faulted": faulted, **figures, "time_overhead": overhead, "args": vars(args)}
    print(f"tiles                 {figures['tiles_total']}")
    print(f"actor kills           {faulted['kills']} (one every {args.kill_every:g} s)")
    print(f"tiles lost            {figures['tiles_lost']}")
    print(
        f"done twice in output  {figures['duplicate_tile_ids']} duplicate tiles, {figures['objects_differing']} "
        f"objects and {figures['id_pixels_differing']} id pixels differing from the clean run"
    )
    print(f"tiles recomputed      {figures['tiles_recomputed']} (driver retries; Ray's own batch reruns not counted)")
    print(f"time                  clean {clean['seconds']:.1f} s, faulted {faulted['seconds']:.1f} s: {overhead:+.0%}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
