"""The sample job through a STAC API (``inputs.stac_search``) against the same job on the same tiles on disk.

    python benchmarks/bench_stac_search.py
    python benchmarks/bench_stac_search.py --json /tmp/stac.json

The sample (jobs/sample) is cut into 2 x 2 tiles per band, listed by a real STAC API on 127.0.0.1 (``rustac serve``,
in-memory) and served by a range-request file server that counts the bytes it sends
(:mod:`geoseg.testutils.stac_server`). Both runs use jobs/sample_fields.yaml's models and an embedded Ray of
``--cpus`` CPUs started once. Reported:

* ``wall`` / ``cpu``: each run's wall seconds and this process's CPU seconds (Ray's workers are not counted);
* ``sent``: bytes of file content the server sent during the API run, per band;
* ``windows``: bytes of the blocks every window the job reads touches (each tile's read window, core + halo; one
  whole-scene pass in the driver; every file's header) — what a block-exact reader without a cache between
  windows would fetch;
* ``files``: the day's files' total size (the bands the job reads, and all six).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import yaml
from rasterio.windows import bounds as window_bounds

from geoseg.pipeline import run_job
from geoseg.plan.job import plan_job
from geoseg.spec.job import parse_spec
from geoseg.testutils.stac_catalog import COLLECTION, block_bytes, header_bytes, make_tiles, sample_bbox, write_catalog
from geoseg.testutils.stac_server import range_file_server, stac_api

REPO = Path(__file__).resolve().parents[1]
ASSETS = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "rededge": "B05", "swir16": "B11"}
TILES = ("r0c0", "r0c1", "r1c0", "r1c1")


def _job(inputs: dict[str, Any], out: Path) -> dict[str, Any]:
    raw = yaml.safe_load((REPO / "jobs" / "sample_fields.yaml").read_text())
    raw["inputs"] = {**inputs, "nodata": 0, "scale": 0.0001}
    raw["output"]["path"] = str(out)
    return raw


def _timed(raw: dict[str, Any]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    run_job(parse_spec(raw), overwrite=True, progress=False)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter() - wall, (after.ru_utime + after.ru_stime) - (cpu.ru_utime + cpu.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    folder = make_tiles(Path(tempfile.mkdtemp(prefix="bench-stac-")))
    search = {"collections": [COLLECTION], "datetime": "2024-06-01/2024-06-30", "bbox": list(sample_bbox())}
    with range_file_server(folder) as files, stac_api(*write_catalog(folder, files.url)) as api:
        raw = _job({"stac_search": {"url": api, **search}, "assets": ASSETS}, folder / "api.gpkg")
        files.reset()
        api_wall, api_cpu = _timed(raw)
        sent = files.sent()
        plan = plan_job(parse_spec(raw), with_stats=False)
    local = {"bands": {n: {"path": [str(folder / "z18" / t / f"{k}.tif") for t in TILES]} for n, k in ASSETS.items()}}
    disk_wall, disk_cpu = _timed(_job(local, folder / "local.gpkg"))
    read_files = [folder / "z18" / t / f"{ASSETS[name]}.tif" for name in plan.bands for t in TILES]
    day_files = [folder / "z18" / t / f"{key}.tif" for key in ASSETS.values() for t in TILES]
    windows = sum(header_bytes(f) for f in day_files) + sum(block_bytes(f) for f in read_files)
    for tile in plan.tiles:
        windows += sum(block_bytes(f, window_bounds(tile.read, plan.scene.transform)) for f in read_files)
    total = sum(sent.values())
    report = {
        "tiles": len(plan.tiles),
        "api": {"wall_s": round(api_wall, 2), "cpu_s": round(api_cpu, 2)},
        "disk": {"wall_s": round(disk_wall, 2), "cpu_s": round(disk_cpu, 2)},
        "sent_bytes": total,
        "sent_per_band": {k: sum(v for p, v in sent.items() if p.endswith(f"/{k}.tif")) for k in ASSETS.values()},
        "window_bytes": windows,
        "sent_over_windows": round(total / windows, 3),
        "files_read_bytes": sum(f.stat().st_size for f in read_files),
        "files_all_bytes": sum(f.stat().st_size for f in day_files),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
