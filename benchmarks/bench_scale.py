"""Memory and time against scene size and object count: is peak memory bounded by the tile size, not the scene
size, and is the driver's memory flat in the number of objects?

    python benchmarks/bench_scale.py                         # 1x, 4x, 16x of 4096^2 (16x = 16384^2)
    python benchmarks/bench_scale.py --base 1024 --tile-size 256 --json /tmp/scale.json   # quick check (~1 min)
    python benchmarks/bench_scale.py --objects               # 1x, 4x, 16x objects on one 8192^2 scene (~655k at 16x)

``--objects`` keeps the pixels fixed (``--side``, default 8192) and shrinks the field cell instead (``--cell`` / sqrt
of the scale: 32, 16, 8 px), so the object count grows 1x / 4x / 16x (~41k / ~164k / ~655k small fields) while
every tile costs the same; the figure to watch is the driver's own peak (PSS and RSS of the ``geoseg.cli``
process alone), which holds the stitcher and streams the export.

For each scale the synthetic field scene (``geoseg.testutils.scenes.write_field_scene``; constant ``--cell`` so the
object density is the same at every scale) is generated once into ``--workdir`` and reused afterwards (not timed).
Then ``python -m geoseg.cli run job.yaml --overwrite --no-progress`` runs in a fresh subprocess, so every run starts
its own embedded Ray, while a thread here samples memory every ``--interval`` seconds.

What is counted
---------------
The whole process tree of that subprocess: the driver (``geoseg.cli``), and its descendants, which in embedded mode
are all of Ray's processes: ``gcs_server``, ``raylet`` (which maps the plasma object store from /dev/shm),
``log_monitor``, the dashboard / runtime-env agents, and the worker processes (``ray::_ModelActor`` actor,
``ray::read_tile`` / ``ray::finish_tile`` task workers, ``ray::IDLE``), all children of the raylet. To be safe
against processes that Ray daemonises out of the tree, each run gets its own ``RAY_TMPDIR`` and every process
whose command line names it is counted too; ``outside_tree`` in the JSON lists any found that way (none on
Ray 2.60, Linux). This benchmark's own process is not counted.

Memory is the sum of **PSS** over those processes (``psutil ... memory_full_info().pss``, from
/proc/PID/smaps_rollup): shared pages (the object store's /dev/shm mapping, shared libraries, copy-on-write
pages) are split among the processes that map them, so the sum is what the tree really occupies. The sum of RSS
is reported for reference; it counts every shared page once per process that maps it. The JSON also has the
sum of USS (private pages only, a lower bound). Page cache (written tiles, rasters) is not process memory and is
not counted. Caveat: a library page shared with a process *outside* the tree (another Python that imported
torch, say) is split with it too, so the PSS sum can read up to ~100-200 MiB lower on a busy machine; run on an
otherwise idle machine for figures to compare.

Phases (for finding what grows) come from outside the subprocess, without instrumenting geoseg: ``startup``
until a raylet appears, ``tiles`` while the raylet lives (the finished-tile count is the number of files in the
job's work dir), then, after ``ray.shutdown()``, ``stitch+vectorize`` (driver only; no temp output file yet),
``mask-write`` (the mask's temporary GeoTIFF exists), ``mask-cog`` (a second temp file: GDAL's COG copy),
``gpkg`` (the GeoPackage's temp file) and ``exit``.

Results: a table on stdout and ``--json`` with, per scale, peak PSS / RSS of the tree, the peak per role
(driver, raylet, model actor, ...) and per phase, the breakdown at the moment of the peak, and the sampled
timeline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pyogrio
import yaml
from affine import Affine

from geoseg.testutils.scenes import FieldScene, field_job, write_field_scene

MIB = 2**20


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=4096, help="side of the 1x scene in pixels (16x = 4 * base)")
    parser.add_argument("--tile-size", type=int, default=1024)
    parser.add_argument("--halo", type=int, default=16)
    parser.add_argument("--cell", type=int, default=None, help="field grid cell in px (default 150; --objects: 32)")
    parser.add_argument("--objects", action="store_true", help="scale the object count on a fixed --side scene")
    parser.add_argument("--side", type=int, default=8192, help="scene side with --objects")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/geoseg-bench"))
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16], help="pixel multiples: perfect squares")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between memory samples")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--verbose-run", action="store_true", help="pass -v to geoseg (its log lands in run.log)")
    return parser.parse_args()


# --------------------------------------------------------------------------------------------- scenes
def ensure_scene(workdir: Path, side: int, cell: int, seed: int = 0) -> tuple[FieldScene, int]:
    """The cached scene of ``side``² pixels (generated when missing) and its true field count."""
    folder = workdir / "scenes" / f"{side}x{side}-c{cell}-s{seed}"
    marker = folder / "truth.json"
    if marker.exists():
        truth = json.loads(marker.read_text())
        scene = FieldScene(
            folder / "red.tif",
            folder / "nir.tif",
            Affine(*truth["transform"]),
            truth["crs"],
            side,
            side,
            [[tuple(b) for b in parts] for parts in truth["boxes"]],
        )
        return scene, truth["fields"]
    print(f"generating a {side} x {side} scene in {folder} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    scene = write_field_scene(folder, side, side, cell=cell, seed=seed)
    doc = {
        "fields": len(scene.boxes),
        "transform": list(scene.transform)[:6],
        "crs": scene.crs,
        "boxes": [[[int(v) for v in box] for box in parts] for parts in scene.boxes],
    }
    marker.write_text(json.dumps(doc))  # written last: marks the scene complete
    print(f"  {len(scene.boxes)} fields, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return scene, len(scene.boxes)


def write_job(scene: FieldScene, run_dir: Path, tile_size: int, halo: int) -> Path:
    spec = field_job(scene, run_dir / "out.gpkg", tile_size=tile_size, batch_size=2, object_store_mb=512)
    spec["tiling"]["halo"] = halo
    spec["output"]["masks"] = True
    path = run_dir / "job.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# --------------------------------------------------------------------------------------------- sampling
def _role(proc: psutil.Process, root: int, cmdline: list[str], actors: set[int]) -> str:
    if proc.pid == root:
        return "driver"
    name = proc.name()
    if name in ("raylet", "gcs_server"):
        return name
    title = " ".join(cmdline)
    if "Agent" in title or "/agent" in title:  # dashboard and runtime-env agents (ray::...Agent once named)
        return "ray agents"
    if "ModelActor" in title:
        actors.add(proc.pid)  # the actor's title changes per call; the process stays the actor
    if proc.pid in actors:
        return "model actor"
    if title.startswith("ray::") or "default_worker.py" in title:
        return "task workers"
    if any(arg.endswith(".py") for arg in cmdline):
        return "ray services"  # log_monitor, monitor (autoscaler), dashboard head
    return f"other {name}"


@dataclass
class Sample:
    t: float
    phase: str
    tiles_done: int
    pss: int
    rss: int
    uss: int
    roles: dict[str, int]


@dataclass
class TreeSampler:
    """Samples the PSS / RSS of a process tree (plus processes naming ``marker``) until stopped."""

    root: int
    marker: str
    run_dir: Path
    interval: float
    started: float
    """time.time() at the run's start: an out.gpkg newer than this is this run's."""
    samples: list[Sample] = field(default_factory=list)
    per_pid: dict[int, dict[str, Any]] = field(default_factory=dict)
    outside_tree: set[int] = field(default_factory=set)
    driver_cpu: float = 0.0
    """The driver's CPU seconds (user + system) at its last sample."""
    driver_hwm: int = 0
    """The driver's peak RSS as the kernel counts it (VmHWM of /proc/PID/status): no peak between samples is lost."""
    marker_seen: bool = False
    """Whether the raylet's command line names ``marker`` (so the fallback search would find Ray's processes)."""
    _procs: dict[int, psutil.Process] = field(default_factory=dict)
    _actors: set[int] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _ray_seen: bool = False

    def __post_init__(self) -> None:
        self._start = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.NoSuchProcess, FileNotFoundError):  # a process or file just went
                self.sample()
            self._stop.wait(self.interval)

    def _tree(self) -> list[psutil.Process]:
        try:
            root = self._proc(self.root)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        in_tree = {p.pid for p in procs}
        for p in psutil.process_iter(["cmdline"]):
            cmd = p.info.get("cmdline") or []
            if p.pid not in in_tree and any(self.marker in arg for arg in cmd):
                procs.append(p)
                self.outside_tree.add(p.pid)
        return procs

    def _proc(self, pid: int) -> psutil.Process:
        if pid not in self._procs:
            self._procs[pid] = psutil.Process(pid)
        return self._procs[pid]

    def sample(self) -> None:
        t = time.perf_counter() - self._start
        pss = rss = uss = 0
        roles: dict[str, int] = {}
        raylet = False
        for proc in self._tree():
            try:
                with proc.oneshot():
                    cmdline = proc.cmdline()
                    role = _role(proc, self.root, cmdline, self._actors)
                    mem = proc.memory_full_info()
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
            raylet |= role == "raylet"
            self.marker_seen |= role == "raylet" and any(self.marker in arg for arg in cmdline)
            pss += mem.pss
            rss += mem.rss
            uss += mem.uss
            roles[role] = roles.get(role, 0) + mem.pss
            entry = self.per_pid.setdefault(
                proc.pid, {"role": role, "title": "", "peak_pss": 0, "peak_rss": 0, "peak_uss": 0}
            )
            entry["role"] = role
            if mem.pss >= entry["peak_pss"]:
                entry["peak_pss"], entry["title"] = mem.pss, " ".join(cmdline)[:80]
            entry["peak_rss"] = max(entry["peak_rss"], mem.rss)
            entry["peak_uss"] = max(entry["peak_uss"], mem.uss)
        if not roles:
            return
        with contextlib.suppress(psutil.Error):
            cpu = self._proc(self.root).cpu_times()
            self.driver_cpu = max(self.driver_cpu, cpu.user + cpu.system)
        with contextlib.suppress(OSError, ValueError):
            status = Path(f"/proc/{self.root}/status").read_text()
            hwm = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
            self.driver_hwm = max(self.driver_hwm, int(hwm.split()[1]) * 1024)
        phase, tiles = self._phase(raylet)
        self.samples.append(Sample(round(t, 2), phase, tiles, pss, rss, uss, roles))

    def _phase(self, raylet: bool) -> tuple[str, int]:
        tiles_dir = self.run_dir / "out.work" / "tiles"
        tiles = sum(1 for e in os.scandir(tiles_dir) if e.name.endswith(".npz")) if tiles_dir.exists() else 0
        if raylet:
            self._ray_seen = True
            return "tiles", tiles
        if not self._ray_seen:
            return "startup", tiles
        temps = [e.name for e in os.scandir(self.run_dir) if ".tmp-" in e.name]
        if any(".gpkg.tmp-" in name for name in temps):
            return "gpkg", tiles
        masks = [name for name in temps if ".tif.tmp-" in name]
        if len(masks) >= 2:
            return "mask-cog", tiles
        if masks:
            return "mask-write", tiles
        gpkg = self.run_dir / "out.gpkg"
        done = gpkg.exists() and gpkg.stat().st_mtime >= self.started
        return ("exit" if done else "stitch+vectorize"), tiles


# --------------------------------------------------------------------------------------------- one run
def run_scale(args: argparse.Namespace, scale: int) -> dict[str, Any]:
    factor = round(scale**0.5)
    if factor * factor != scale:
        raise SystemExit(f"--scales must be perfect squares (pixel multiples of the 1x scene), got {scale}")
    if args.objects:
        side, cell = args.side, (args.cell or 32) // factor
    else:
        side, cell = args.base * factor, args.cell or 150
    scene, truth = ensure_scene(args.workdir, side, cell)
    run_dir = args.workdir / f"run-{side}-c{cell}-t{args.tile_size}"
    run_dir.mkdir(parents=True, exist_ok=True)
    job = write_job(scene, run_dir, args.tile_size, args.halo)
    ray_tmp = tempfile.mkdtemp(prefix="gsb-", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [sys.executable, "-m", "geoseg.cli", *(["-v"] if args.verbose_run else []), "run", str(job)]
    cmd += ["--overwrite", "--no-progress"]
    print(f"[{scale}x] {side} x {side}, cell {cell}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    log_path = run_dir / "run.log"
    with open(log_path, "w") as log:
        wall0 = time.time()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        sampler = TreeSampler(proc.pid, ray_tmp, run_dir, args.interval, wall0)
        sampler.start()
        stdout, _ = proc.communicate()
        wall = time.perf_counter() - start
        sampler.stop()
    time.sleep(1.0)  # anything of this run's Ray still alive now outlived the driver
    left_running = [
        f"{p.pid} {' '.join(p.info['cmdline'] or [])[:80]}"
        for p in psutil.process_iter(["cmdline"])
        if any(ray_tmp in arg for arg in p.info["cmdline"] or [])
    ]
    shutil.rmtree(ray_tmp, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"[{scale}x] geoseg failed (rc {proc.returncode}): see {log_path}\n{stdout}")
    gpkg = run_dir / "out.gpkg"
    objects = int(pyogrio.read_info(gpkg, layer="fields")["features"])
    tiles = int(pyogrio.read_info(gpkg, layer="tiles")["features"])
    match = re.search(r" in ([0-9.]+) s on ", stdout)
    job_s = float(match.group(1)) if match else None
    return summarize(scale, side, tiles, objects, truth, wall, job_s, sampler, left_running)


def summarize(
    scale: int,
    side: int,
    tiles: int,
    objects: int,
    truth: int,
    wall: float,
    job_s: float | None,
    s: TreeSampler,
    left_running: list[str],
) -> dict[str, Any]:
    samples = s.samples
    peak = max(samples, key=lambda x: x.pss)
    driver = s.per_pid.get(s.root, {"peak_pss": 0, "peak_rss": 0})
    by_role: dict[str, int] = {}
    by_phase: dict[str, dict[str, Any]] = {}
    for x in samples:
        for role, v in x.roles.items():
            by_role[role] = max(by_role.get(role, 0), v)
        ph = by_phase.setdefault(x.phase, {"peak_pss_mib": 0.0, "seconds": 0.0, "roles_peak_pss_mib": {}})
        ph["peak_pss_mib"] = max(ph["peak_pss_mib"], round(x.pss / MIB, 1))
        for role, v in x.roles.items():
            ph["roles_peak_pss_mib"][role] = max(ph["roles_peak_pss_mib"].get(role, 0.0), round(v / MIB, 1))
    phases = [x.phase for x in samples]
    for i, x in enumerate(samples[1:], start=1):
        by_phase[phases[i]]["seconds"] = round(by_phase[phases[i]]["seconds"] + x.t - samples[i - 1].t, 2)
    mib = lambda v: round(v / MIB, 1)  # noqa: E731
    return {
        "scale": scale,
        "width": side,
        "height": side,
        "megapixels": round(side * side / 1e6, 2),
        "tiles": tiles,
        "objects": objects,
        "truth": truth,
        "objects_match": objects == truth,
        "wall_s": round(wall, 2),
        "job_s": job_s,
        "mpx_per_s": round(side * side / 1e6 / wall, 3),
        "peak_pss_mib": mib(peak.pss),
        "peak_rss_mib": mib(max(x.rss for x in samples)),
        "peak_uss_mib": mib(max(x.uss for x in samples)),
        "peak_phase": peak.phase,
        "driver_peak_pss_mib": mib(driver["peak_pss"]),
        "driver_peak_rss_mib": mib(driver["peak_rss"]),
        "driver_hwm_mib": mib(s.driver_hwm),
        "driver_cpu_s": round(s.driver_cpu, 1),
        "driver_peak_phase": max(samples, key=lambda x: x.roles.get("driver", 0)).phase,
        "peak_breakdown_mib": {k: mib(v) for k, v in sorted(peak.roles.items(), key=lambda kv: -kv[1])},
        "peak_by_role_mib": {k: mib(v) for k, v in sorted(by_role.items(), key=lambda kv: -kv[1])},
        "peak_by_phase": by_phase,
        "processes": {
            str(pid): {**e, **{k: mib(e[k]) for k in ("peak_pss", "peak_rss", "peak_uss")}}
            for pid, e in sorted(s.per_pid.items(), key=lambda kv: -kv[1]["peak_pss"])
        },
        "outside_tree": sorted(s.outside_tree),
        "marker_in_raylet_cmdline": s.marker_seen,
        "left_running": left_running,
        "samples": len(samples),
        "timeline": [
            {
                "t": x.t,
                "phase": x.phase,
                "tiles": x.tiles_done,
                "pss": mib(x.pss),
                "rss": mib(x.rss),
                "uss": mib(x.uss),
                **{k: mib(v) for k, v in x.roles.items()},
            }
            for x in samples
        ],
    }


# --------------------------------------------------------------------------------------------- report
def table(results: list[dict[str, Any]]) -> str:
    head = ["scale", "size", "tiles", "objects/truth", "wall s", "Mpx/s", "peak PSS MiB", "peak RSS MiB", "PSS vs 1x"]
    head += ["driver PSS MiB", "driver RSS MiB", "driver HWM MiB", "HWM vs 1x"]
    first = next((r for r in results if r["scale"] == 1), results[0])
    base, driver_base = first["peak_pss_mib"], first["driver_hwm_mib"]
    rows = [
        [
            f"{r['scale']}x",
            f"{r['width']}x{r['height']}",
            str(r["tiles"]),
            f"{r['objects']}/{r['truth']}" + ("" if r["objects_match"] else " !"),
            f"{r['wall_s']:.1f}",
            f"{r['mpx_per_s']:.2f}",
            f"{r['peak_pss_mib']:.0f}",
            f"{r['peak_rss_mib']:.0f}",
            f"{r['peak_pss_mib'] / base:.2f}",
            f"{r['driver_peak_pss_mib']:.0f}",
            f"{r['driver_peak_rss_mib']:.0f}",
            f"{r['driver_hwm_mib']:.0f}",
            f"{r['driver_hwm_mib'] / driver_base:.2f}",
        ]
        for r in results
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.append("")
    fit = time_fit(results)
    if fit:
        lines.append(
            f"wall time ~ {fit['fixed_s']:.1f} s + {fit['s_per_mpx']:.3f} s/Mpx "
            f"(marginal {1 / fit['s_per_mpx']:.1f} Mpx/s; largest residual {fit['max_residual_pct']:.0f}%)"
        )
    for r in results:
        parts = ", ".join(f"{k} {v:.0f}" for k, v in r["peak_breakdown_mib"].items())
        lines.append(f"{r['scale']}x peak in phase {r['peak_phase']}: {parts} (MiB PSS)")
        lines.append(f"{r['scale']}x driver peak in phase {r['driver_peak_phase']}")
    return "\n".join(lines)


def time_fit(results: list[dict[str, Any]]) -> dict[str, float] | None:
    """Least-squares wall time = fixed + per-Mpx * Mpx: linear in pixels once the fixed start-up is set apart."""
    if len({r["megapixels"] for r in results}) < 2:
        return None
    import numpy as np

    mpx = np.array([r["megapixels"] for r in results])
    wall = np.array([r["wall_s"] for r in results])
    slope, fixed = np.polyfit(mpx, wall, 1)
    residual = np.abs(fixed + slope * mpx - wall) / wall
    return {"fixed_s": float(fixed), "s_per_mpx": float(slope), "max_residual_pct": float(100 * residual.max())}


def main() -> None:
    args = _parse()
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for scale in args.scales:
        results.append(run_scale(args, scale))
        r = results[-1]
        print(
            f"[{scale}x] {r['wall_s']:.1f} s, peak PSS {r['peak_pss_mib']:.0f} MiB ({r['peak_phase']}), "
            f"driver {r['driver_peak_pss_mib']:.0f} MiB PSS / {r['driver_hwm_mib']:.0f} MiB peak RSS / "
            f"{r['driver_cpu_s']:.0f} s CPU, "
            f"{r['objects']}/{r['truth']} objects",
            file=sys.stderr,
            flush=True,
        )
        if args.json:  # partial results survive a later failure
            _write_json(args, results)
    print(table(results))
    if args.json:
        _write_json(args, results)
    if not all(r["objects_match"] for r in results):
        raise SystemExit("objects found differ from the truth")


def _write_json(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    doc = {
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": sys.platform,
            "python": sys.version.split()[0],
        },
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "results": results,
        "time_fit": time_fit(results),
    }
    args.json.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
