"""Actor utilisation: the share of wall time the model actors spend in ``predict``, for a model of fixed cost.

    python benchmarks/bench_actors.py                                # 1 and 2 actors, 0.25 s per tile
    python benchmarks/bench_actors.py --actors 1 --cost 0.1 --json /tmp/actors.json

A synthetic field scene (``--side``² px, cached in ``--workdir``) runs through ``geoseg.run.passes.run_job`` (embedded
Ray, in this process) with ``field_regions`` wrapped in :class:`geoseg.testutils.fixedcost.FixedCostModel`: every
batch costs ``--cost`` seconds per tile (a sleep by default, as a GPU model leaves the CPU free; ``--burn`` spins a
CPU instead), and still gives the real outputs, so reading, finishing, stitching and export do their usual work.
The wrapper is swapped in by subclassing the model actor here (Ray ships a class defined in ``__main__`` by value).

Reported per run:

* ``tile phase``: the wall time of the tile loop (:func:`geoseg.run.loop.stream_tiles`, actors already started);
* ``utilisation``: time in ``predict`` summed over the actors / (actors x tile phase): what the issue asks for;
* ``steady``: the same between each actor's first ``predict`` start and last ``predict`` end (no fill / drain);
* ``gaps``: the longest and mean wait of an actor between two ``predict`` calls;
* ``fill`` / ``drain``: tile phase start to the first ``predict``; the last ``predict`` to the tile phase end.

Ray gets ``actors + --task-cpus`` logical CPUs (placement needs one per CPU actor; with sleeping actors the
``--task-cpus`` slots are the real cores left for reading and finishing tiles).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import geoseg.run.actors
import geoseg.run.passes
from geoseg.pipeline import run_job
from geoseg.run.actors import ModelActor
from geoseg.spec.job import parse_spec
from geoseg.testutils.fixedcost import FixedCostModel, busy_intervals
from geoseg.testutils.scenes import field_job, write_field_scene

COST: dict[str, Any] = {"seconds": 0.25, "log": "", "burn": False}
"""Set before each run; travels to the actors with :class:`FixedCostActor` (pickled by value from __main__)."""


class FixedCostActor(ModelActor):
    """The model actor with every model wrapped at a fixed cost per tile."""

    cost = COST

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.models = [
            FixedCostModel(m, self.cost["seconds"], Path(self.cost["log"]), self.cost["burn"]) for m in self.models
        ]


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=4096)
    parser.add_argument("--cell", type=int, default=100)
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--cost", type=float, default=0.25, help="model seconds per tile")
    parser.add_argument("--burn", action="store_true", help="spin a CPU instead of sleeping")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--in-flight", type=int, default=None, help="compute.max_in_flight (default: geoseg's)")
    parser.add_argument("--task-cpus", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/geoseg-bench-actors"))
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args()


def run_once(args: argparse.Namespace, scene: Any, actors: int) -> dict[str, Any]:
    run_dir = args.workdir / f"run-a{actors}"
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "predict.log"
    log.unlink(missing_ok=True)
    COST.update(seconds=args.cost, log=str(log), burn=args.burn)
    compute: dict[str, Any] = {"actors": actors, "num_cpus": actors + args.task_cpus}
    if args.in_flight:
        compute["max_in_flight"] = args.in_flight
    raw = field_job(scene, run_dir / "out.gpkg", tile_size=args.tile_size, **compute)
    raw["compute"]["batch_size"] = args.batch_size
    raw["output"].update(masks=False, quicklook=False)
    spec = parse_spec(raw)
    phase: dict[str, float] = {}
    real_stream_tiles = geoseg.run.passes.stream_tiles

    def timed_stream_tiles(*a: Any, **k: Any) -> None:
        phase["start"] = time.time()
        real_stream_tiles(*a, **k)
        phase["end"] = time.time()

    geoseg.run.passes.stream_tiles = timed_stream_tiles
    geoseg.run.actors.ModelActor = FixedCostActor  # type: ignore[misc,assignment]
    start = time.perf_counter()
    try:
        result = run_job(spec, overwrite=True, progress=False)
    finally:
        geoseg.run.passes.stream_tiles = real_stream_tiles
        geoseg.run.actors.ModelActor = ModelActor  # type: ignore[misc]
    wall = time.perf_counter() - start
    return summarize(args, actors, spec.compute.in_flight, busy_intervals(log), phase, wall, result.tiles_done)


def summarize(
    args: argparse.Namespace,
    actors: int,
    in_flight: int,
    busy: dict[int, list[tuple[float, float]]],
    phase: dict[str, float],
    wall: float,
    tiles: int,
) -> dict[str, Any]:
    tile_phase = phase["end"] - phase["start"]
    in_predict = sum(end - start for calls in busy.values() for start, end in calls)
    steady = [sum(e - s for s, e in calls) / (calls[-1][1] - calls[0][0]) for calls in busy.values()]
    gaps = [b[0] - a[1] for calls in busy.values() for a, b in itertools.pairwise(calls)]
    return {
        "actors": actors,
        "tiles": tiles,
        "batch_size": args.batch_size,
        "in_flight": in_flight,
        "cost_s_per_tile": args.cost,
        "burn": args.burn,
        "wall_s": round(wall, 2),
        "tile_phase_s": round(tile_phase, 2),
        "ideal_tile_phase_s": round(tiles * args.cost / actors, 2),
        "predict_s": round(in_predict, 2),
        "utilisation": round(in_predict / (actors * tile_phase), 3),
        "steady_utilisation": round(min(steady), 3) if steady else None,
        "fill_s": round(min(c[0][0] for c in busy.values()) - phase["start"], 2),
        "drain_s": round(phase["end"] - max(c[-1][1] for c in busy.values()), 2),
        "max_gap_s": round(max(gaps), 3) if gaps else None,
        "mean_gap_s": round(sum(gaps) / len(gaps), 3) if gaps else None,
        "calls_per_actor": sorted(len(calls) for calls in busy.values()),
    }


def main() -> None:
    args = _parse()
    logging.basicConfig(level=logging.WARNING)
    folder = args.workdir / "scenes" / f"{args.side}-c{args.cell}"
    print(f"scene {args.side}² px in {folder} ...", file=sys.stderr, flush=True)
    scene = write_field_scene(folder, args.side, args.side, cell=args.cell, seed=0)
    load = os.getloadavg()[0]
    results = []
    for actors in args.actors:
        results.append(run_once(args, scene, actors))
        r = results[-1]
        print(
            f"{actors} actor(s): {r['tiles']} tiles, tile phase {r['tile_phase_s']} s (ideal {r['ideal_tile_phase_s']}"
            f" s), utilisation {r['utilisation']:.1%}, steady {r['steady_utilisation']:.1%}, gaps max "
            f"{r['max_gap_s']} s mean {r['mean_gap_s']} s, fill {r['fill_s']} s, drain {r['drain_s']} s, "
            f"wall {r['wall_s']} s",
            flush=True,
        )
    if args.json:
        doc = {"load_1min_at_start": load, "load_1min_at_end": os.getloadavg()[0], "results": results}
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **doc}, indent=1))


if __name__ == "__main__":
    main()
