"""geoseg against the plain floor: the same generated scene, the same NDVI classes, side by side in one run.

    python benchmarks/bench_floor.py                        # 4096², 8192², 16384²
    python benchmarks/bench_floor.py --sizes 4096           # a quick check (~1 min once the scene exists)
    python benchmarks/bench_floor.py --sizes 4096 8192 --repeat 3     # medians of 3 alternating runs (busy machine)
    python benchmarks/bench_floor.py --with-32768 --json /tmp/floor.json
    python benchmarks/bench_floor.py --sizes 8192 --ray-address 127.0.0.1:6391   # against a Ray started beforehand

The scene (generated once per size into ``--workdir``, not timed): one 4-band uint16 GeoTIFF (blue, green, red,
NIR; DEFLATE, pixel-interleaved, 512² blocks, 10 m, EPSG:32633). Field-like content: strips of fields of random
width and height that touch each other, each field at one of four NDVI levels (0.1 / 0.35 / 0.55 / 0.8, ±0.04 per
field, every level well inside one crop-health class) plus per-pixel noise, so adjacent fields of one class join
into class regions of a few fields.

Both sides run in a fresh Python process each (imports included in their walls), the scene's file read once
before (both start from a warm page cache):

* **floor** (``--floor-only``, one plain Python process, no tiling, no Ray): per 512² block read red and NIR in one
  call, NDVI -> classes 1..4 by crop_health's default thresholds (0.25 / 0.45 / 0.65), ``rasterio.features.shapes``
  on the block, the polygons appended to ``floor.gpkg`` (layer ``classes``: ``class`` column, spatial index; regions
  are cut at block edges, not merged), the classes to ``floor_classes.tif`` (tiled DEFLATE GeoTIFF, mode overviews,
  converted to a COG).
* **geoseg**: ``python -m geoseg.cli run job.yaml --overwrite --no-progress`` (embedded Ray, ``num_cpus`` =
  ``--cpus``), one ``crop_health`` model (NDVI, ``smoothing_px: 0`` so its classes are the floor's), 1024 px tiles,
  ``--halo`` px halo. It writes ``out.gpkg`` (layer ``crop_health``: class regions stitched across tiles with class,
  area, perimeter and NDVI mean; layer ``tiles``, the tile index; table ``job``) and ``out_crop_health.tif`` (COG,
  class colour table, mode overviews), and its work dir (one file per tile, for ``--resume``).

With ``--repeat N`` the sides run N times, alternating; the report gives the median run of each side (and the ratio
of the best walls, the least disturbed by other load), and the CPU seconds of each side's process tree (its own and
its descendants', sampled every 0.1 s: for geoseg all of Ray's processes), which other load disturbs less than walls.
The two class COGs are compared pixel by pixel (``classes_identical`` in the JSON). geoseg's stage breakdown
comes from what the run records: the job table's ``seconds_<stage>`` rows (plan, Ray start, actors, tiles,
driver stitching, objects, masks) and the tile index (read / model / finish seconds summed over tiles: worker
time, not wall). ``write_gpkg+rest`` is the job's wall less the recorded stages; ``startup`` the process's wall
less the job's: the Python imports that did not overlap Ray's start (``geoseg run`` starts Ray while the pipeline
imports, :mod:`geoseg.launch`; the job's wall counts Ray's start).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

BLOCK = 512
THRESHOLDS = np.array([0.25, 0.45, 0.65], np.float32)
"""crop_health's default class bounds on NDVI."""
LEVELS = np.array([0.10, 0.35, 0.55, 0.80])
"""NDVI of fields of each class."""
SCALE = np.float32(0.0001)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 16384], help="scene sides in pixels")
    parser.add_argument("--with-32768", action="store_true", help="add the 32768² scene (~8 GiB of pixels)")
    parser.add_argument("--tile-size", type=int, default=1024)
    parser.add_argument("--halo", type=int, default=16)
    parser.add_argument("--cpus", type=int, default=2, help="num_cpus of geoseg's embedded Ray")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each side, alternating; medians reported")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/geoseg-floor"))
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--ray-address",
        default=None,
        help="run geoseg against this running Ray (`geoseg run --address`) instead of an embedded one; its CPU "
        "seconds then miss Ray's processes, which are not its children",
    )
    parser.add_argument("--floor-only", nargs=2, metavar=("SCENE", "OUT_DIR"), help=argparse.SUPPRESS)
    return parser.parse_args()


# --------------------------------------------------------------------------------------------- the scene
def _layout(side: int, rng: np.random.Generator) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Strips of fields: (strip end row, field end columns, field NDVI, field class) per strip."""
    strips, row = [], 0
    while row < side:
        row = min(side, row + int(rng.integers(40, 150)))
        ends = np.cumsum(rng.integers(30, 200, size=side // 30 + 2))
        ends = np.append(ends[ends < side], side)
        cls = rng.integers(0, 4, size=len(ends))
        strips.append((row, ends, LEVELS[cls] + rng.uniform(-0.04, 0.04, len(ends)), cls))
    return strips


def _paint(strips: list, r0: int, rows: int, side: int, rng: np.random.Generator) -> np.ndarray:
    """The 4 bands (uint16 DN) of rows ``r0 .. r0 + rows``."""
    ndvi = np.empty((rows, side))
    start = 0
    cols = np.arange(side)
    for end, col_ends, field_ndvi, _ in strips:
        lo, hi = max(start, r0), min(end, r0 + rows)
        if lo < hi:
            ndvi[lo - r0 : hi - r0] = field_ndvi[np.searchsorted(col_ends, cols, side="right")]
        start = end
    red = 0.04 + 0.16 * (1 - ndvi)  # reflectance
    nir = red * (1 + ndvi) / (1 - ndvi)
    noise = rng.integers(-40, 41, size=(4, rows, side))
    bands = np.stack([red * 0.6, red * 0.9, red, nir]) * 10000 + noise
    return np.clip(bands, 1, 65535).astype(np.uint16)


def ensure_scene(workdir: Path, side: int, seed: int = 0) -> Path:
    """The cached scene of ``side``² pixels (generated when missing)."""
    path = workdir / "scenes" / f"fields-{side}-s{seed}.tif"
    if path.exists():
        return path
    print(f"generating a {side} x {side} 4-band scene in {path} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    strips = _layout(side, rng)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff", "width": side, "height": side, "count": 4, "dtype": "uint16", "crs": "EPSG:32633",
        "transform": Affine(10.0, 0, 500000.0, 0, -10.0, 5000000.0), "tiled": True, "blockxsize": BLOCK,
        "blockysize": BLOCK, "compress": "deflate", "interleave": "pixel", "bigtiff": "IF_SAFER",
        "num_threads": "all_cpus",
    }  # fmt: skip
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for r0 in range(0, side, BLOCK):
            rows = min(BLOCK, side - r0)
            dst.write(_paint(strips, r0, rows, side, rng), window=Window(0, r0, side, rows))
    tmp.rename(path)
    print(f"  {time.perf_counter() - start:.0f} s, {path.stat().st_size / 2**20:.0f} MiB", file=sys.stderr)
    return path


# --------------------------------------------------------------------------------------------- the floor
def classify(red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """NDVI -> classes 1..4 (0 where NDVI is undefined), as crop_health computes them (float32 reflectance)."""
    r, n = red.astype(np.float32) * SCALE, nir.astype(np.float32) * SCALE
    den = n + r
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi = np.where(den != 0, (n - r) / den, np.float32(np.nan))
    classes = (np.digitize(ndvi, THRESHOLDS) + 1).astype(np.uint8)
    classes[np.isnan(ndvi)] = 0
    return classes


def run_floor(scene: Path, out_dir: Path) -> dict[str, Any]:
    """The floor: per 512² block read red + NIR, classes, polygons -> GeoPackage, classes -> COG."""
    import geopandas as gpd
    import pyogrio
    import rasterio.features
    import rasterio.shutil
    import shapely

    gpkg, cog, tmp = out_dir / "floor.gpkg", out_dir / "floor_classes.tif", out_dir / "floor_classes.tmp.tif"
    for path in (gpkg, cog, tmp):
        path.unlink(missing_ok=True)
    polygons = 0
    with rasterio.open(scene) as src:
        profile = {
            "driver": "GTiff", "width": src.width, "height": src.height, "count": 1, "dtype": "uint8",
            "crs": src.crs, "transform": src.transform, "nodata": 0, "tiled": True, "blockxsize": BLOCK,
            "blockysize": BLOCK, "compress": "DEFLATE",
        }  # fmt: skip
        with rasterio.open(tmp, "w", **profile) as dst:
            for r0 in range(0, src.height, BLOCK):
                geoms, classes_col = [], []
                for c0 in range(0, src.width, BLOCK):
                    win = Window(c0, r0, min(BLOCK, src.width - c0), min(BLOCK, src.height - r0))
                    red, nir = src.read((3, 4), window=win)
                    classes = classify(red, nir)
                    dst.write(classes, 1, window=win)
                    transform = rasterio.windows.transform(win, src.transform)
                    for geom, value in rasterio.features.shapes(classes, mask=classes > 0, transform=transform):
                        geoms.append(shapely.geometry.shape(geom))
                        classes_col.append(int(value))
                frame = gpd.GeoDataFrame({"class": np.array(classes_col, np.int32)}, geometry=geoms, crs=src.crs)
                pyogrio.write_dataframe(frame, gpkg, layer="classes", append=gpkg.exists(), promote_to_multi=True)
                polygons += len(frame)
            factors = [2**i for i in range(1, max(1, int(np.ceil(np.log2(src.width / BLOCK)))) + 1)]
            dst.build_overviews(factors, rasterio.enums.Resampling.mode)
    options = {"BLOCKSIZE": str(BLOCK), "COMPRESS": "DEFLATE", "OVERVIEWS": "FORCE_USE_EXISTING"}
    rasterio.shutil.copy(tmp, cog, driver="COG", **options)
    tmp.unlink()
    return {"polygons": polygons}


# --------------------------------------------------------------------------------------------- geoseg
def write_job(scene: Path, run_dir: Path, args: argparse.Namespace) -> Path:
    import yaml

    spec = {
        "name": "bench-floor",
        "inputs": {"files": [str(scene)], "band_names": ["blue", "green", "red", "nir"], "scale": 0.0001},
        "tiling": {"tile_size": args.tile_size, "halo": args.halo},
        "models": [{"type": "crop_health", "name": "crop_health", "indices": ["ndvi"], "smoothing_px": 0}],
        "output": {"path": str(run_dir / "out.gpkg"), "masks": True, "quicklook": False},
        "compute": {"num_cpus": args.cpus},
    }
    path = run_dir / "job.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _timed(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the process tree, stdout) of a command."""
    start = time.perf_counter()
    with open(log, "w") as err:  # run in the run dir: `-m geoseg.cli` must not pick up a geoseg/ in the cwd
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=log.parent)
        cpu: dict[int, float] = {}
        done = threading.Event()
        sampler = threading.Thread(target=_sample_cpu, args=(proc.pid, cpu, done), daemon=True)
        sampler.start()
        stdout, _ = proc.communicate()
        done.set()
        sampler.join()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (rc {proc.returncode}), see {log}:\n{stdout}")
    return wall, sum(cpu.values()), stdout


def _sample_cpu(root: int, cpu: dict[int, float], done: threading.Event, interval: float = 0.1) -> None:
    """CPU seconds per process of the tree under ``root`` (Ray's processes included), sampled until ``done``."""
    import psutil

    try:
        top = psutil.Process(root)
    except psutil.NoSuchProcess:
        return
    while not done.is_set():
        try:
            procs = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            try:
                times = p.cpu_times()
                cpu[p.pid] = max(cpu.get(p.pid, 0.0), times.user + times.system)
            except psutil.Error:
                continue
        done.wait(interval)


def geoseg_stages(gpkg: Path, job_s: float | None, wall: float) -> dict[str, Any]:
    """The stage breakdown from the run's job table and tile index."""
    import pyogrio

    job = pyogrio.read_dataframe(gpkg, layer="job")
    rows = dict(zip(job["key"], job["value"], strict=True))
    stages = {k.removeprefix("seconds_"): float(v) for k, v in rows.items() if k.startswith("seconds_")}
    tiles = pyogrio.read_dataframe(gpkg, layer="tiles", read_geometry=False)
    workers = {f"{k}_tiles_sum": round(float(tiles[f"{k}_s"].sum()), 2) for k in ("read", "model", "finish")}
    out: dict[str, Any] = {"recorded": stages, **workers, "tiles": len(tiles)}
    if job_s is not None:
        driver = sum(v for k, v in stages.items() if k != "stitch")  # stitch is part of tiles
        out["write_gpkg+rest"] = round(job_s - driver, 2)
        out["startup"] = round(wall - job_s, 2)
    return out


def run_geoseg(scene: Path, run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    job = write_job(scene, run_dir, args)
    ray_tmp = tempfile.mkdtemp(prefix="gsf-", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [sys.executable, "-m", "geoseg.cli", "run", str(job), "--overwrite", "--no-progress"]
    if args.ray_address:
        cmd += ["--address", args.ray_address]
    wall, cpu, stdout = _timed(cmd, run_dir / "geoseg.log", env)
    match = re.search(r" in ([0-9.]+) s on ", stdout)
    job_s = float(match.group(1)) if match else None
    import pyogrio

    polygons = int(pyogrio.read_info(run_dir / "out.gpkg", layer="crop_health")["features"])
    stages = geoseg_stages(run_dir / "out.gpkg", job_s, wall)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "job_s": job_s, "polygons": polygons, **stages}


def same_classes(a: Path, b: Path) -> bool:
    """Whether two class rasters hold the same pixels (read block row by block row)."""
    with rasterio.open(a) as ra, rasterio.open(b) as rb:
        if (ra.width, ra.height) != (rb.width, rb.height):
            return False
        for r0 in range(0, ra.height, 2048):
            win = Window(0, r0, ra.width, min(2048, ra.height - r0))
            if not np.array_equal(ra.read(1, window=win), rb.read(1, window=win)):
                return False
    return True


def run_size(side: int, args: argparse.Namespace) -> dict[str, Any]:
    scene = ensure_scene(args.workdir, side)
    run_dir = args.workdir / f"run-{side}"
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(scene, "rb") as f:  # warm page cache for both sides
        while f.read(64 * 2**20):
            pass
    load = os.getloadavg()[0]
    floors, geosegs = [], []
    for rep in range(args.repeat):  # alternating, so both sides see the same machine load
        print(f"[{side}] floor ({rep + 1}/{args.repeat}) ...", file=sys.stderr, flush=True)
        floor_cmd = [sys.executable, __file__, "--floor-only", str(scene), str(run_dir)]
        floor_wall, floor_cpu, floor_out = _timed(floor_cmd, run_dir / "floor.log")
        floors.append({"wall_s": round(floor_wall, 2), "cpu_s": round(floor_cpu, 2), **json.loads(floor_out)})
        print(f"[{side}] geoseg ({rep + 1}/{args.repeat}) ...", file=sys.stderr, flush=True)
        geosegs.append(run_geoseg(scene, run_dir, args))
    floor, geoseg = _median_run(floors), _median_run(geosegs)
    identical = same_classes(run_dir / "floor_classes.tif", run_dir / "out_crop_health.tif")
    return {
        "side": side,
        "megapixels": round(side * side / 1e6, 1),
        "scene_mib": round(scene.stat().st_size / 2**20, 1),
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "floor": floor,
        "geoseg": geoseg,
        "ratio": round(geoseg["wall_s"] / floor["wall_s"], 2),
        "ratio_best": round(min(r["wall_s"] for r in geosegs) / min(r["wall_s"] for r in floors), 2),
        "floor_walls": [r["wall_s"] for r in floors],
        "geoseg_walls": [r["wall_s"] for r in geosegs],
        "classes_identical": identical,
    }


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median wall time (the lower middle one of an even count)."""
    return sorted(runs, key=lambda r: r["wall_s"])[(len(runs) - 1) // 2]


def report(r: dict[str, Any]) -> str:
    g, st = r["geoseg"], r["geoseg"]["recorded"]
    lines = [
        f"{r['side']}² ({r['megapixels']} Mpx, load {r['load_before']} -> {r['load_after']}): floor "
        f"{r['floor']['wall_s']:.1f} s ({r['floor']['polygons']} polygons), geoseg {g['wall_s']:.1f} s "
        f"({g['polygons']} polygons, {g['tiles']} tiles) -> {r['ratio']:.2f}x (best of each: {r['ratio_best']:.2f}x); "
        "class COGs identical: "
        f"{r['classes_identical']} (walls: floor {r['floor_walls']}, geoseg {r['geoseg_walls']}; CPU s: floor "
        f"{r['floor']['cpu_s']}, geoseg {g['cpu_s']})",
        f"  geoseg: startup {g.get('startup')} | "
        + " | ".join(f"{k} {v:.2f}" for k, v in st.items())
        + f" | write gpkg+rest {g.get('write_gpkg+rest')}  (stitch: driver time within tiles)",
        f"  worker seconds summed over tiles: read {g['read_tiles_sum']}, model {g['model_tiles_sum']}, "
        f"finish {g['finish_tiles_sum']}",
    ]
    return "\n".join(lines)


def main() -> None:
    args = _parse()
    if args.floor_only:
        print(json.dumps(run_floor(Path(args.floor_only[0]), Path(args.floor_only[1]))))
        return
    sizes = [*args.sizes, *([32768] if args.with_32768 else [])]
    results = []
    for side in sizes:
        results.append(run_size(side, args))
        print(report(results[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
