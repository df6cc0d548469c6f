"""Run every job in jobs/ and write a digest of its outputs, or compare two digests: "identical outputs" as a check.

    python benchmarks/job_outputs.py run --out /tmp/before.json            # on the old commit
    python benchmarks/job_outputs.py run --out /tmp/after.json             # on the new one
    python benchmarks/job_outputs.py diff /tmp/before.json /tmp/after.json

Layer by layer: each attribute column and each geometry as WKB; each raster's pixels and profile; Parquet files as
tables. Timestamps, paths and run seconds are left out. The SAM jobs run with the tiny test SAM (random weights, a
fixed seed) in place of vit_b, and the U-Net job with a randomly initialised checkpoint of fixed seed: no weights
can be downloaded here, and the point is the pipeline's plumbing, not the masks' quality.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import rasterio
import yaml

REPO = Path(__file__).resolve().parents[1]
VOLATILE = ("seconds_", "started", "finished", "update_time", "read_s", "model_s", "finish_s", "geoseg_version")
"""Job-table keys and columns that differ between any two runs."""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _volatile(name: str) -> bool:
    return any(name.startswith(v) or name.endswith(v) for v in VOLATILE)


WORK = Path("/nonexistent")
"""The run's temp folder, left out of every value (it differs between runs)."""


def _unplaced(text: str) -> str:
    return text.replace(str(WORK), "<work>")


def _frames(path: Path) -> dict[str, Any]:
    if path.name.endswith(".parquet"):
        import geopandas as gpd

        return {"parquet": gpd.read_parquet(path)}
    return {layer: pyogrio.read_dataframe(path, layer=layer) for layer, _ in pyogrio.list_layers(path)}


def _vector_digest(path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer, frame in _frames(path).items():
        cols: dict[str, Any] = {"rows": len(frame)}
        for col in frame.columns:
            if _volatile(col):
                continue
            if col == "geometry":
                cols[col] = _digest(b"".join(g.wkb if g is not None else b"-" for g in frame.geometry))
            elif layer == "job" and col == "value":
                keep = frame[~frame.iloc[:, 0].astype(str).map(_volatile)]
                cols[col] = _digest(_unplaced(keep.to_csv(index=False)).encode())
            else:
                cols[col] = _digest(_unplaced(frame[col].astype(str).str.cat(sep="\x1f")).encode())
        out[layer] = cols
    return out


def _raster_digest(path: Path) -> dict[str, Any]:
    with rasterio.open(path) as src:
        profile = {k: str(v) for k, v in src.profile.items()}
        pixels = _digest(np.ascontiguousarray(src.read()).tobytes())
        colormap = None
        with contextlib.suppress(ValueError):
            colormap = _digest(json.dumps(src.colormap(1), sort_keys=True).encode())
    return {"profile": profile, "pixels": pixels, "colormap": colormap}


def _file_digest(path: Path) -> Any:
    if path.suffix == ".gpkg" or path.name.endswith((".parquet", ".fgb")):
        return _vector_digest(path)
    if path.suffix == ".tif":
        return _raster_digest(path)
    if path.suffix == ".png":
        return {"bytes": _digest(path.read_bytes())}
    return {"size": path.stat().st_size}


def _prepare_jobs(work: Path) -> list[Path]:
    """Copies of jobs/ with the SAM jobs on the tiny SAM and the U-Net job on a random checkpoint."""
    from geoseg.testutils.tiny_sam import TINY_VARIANT, write_tiny_checkpoint

    shutil.copytree(REPO / "jobs", work / "jobs", ignore=shutil.ignore_patterns("*.py"))
    tiny = write_tiny_checkpoint(work / "tiny_sam.pth", seed=0)
    jobs = []
    for path in sorted((work / "jobs").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        for model in spec["models"]:
            if model["type"] == "sam":
                model["variant"], model["checkpoint"] = TINY_VARIANT, str(tiny)
                model.pop("points_per_side", None)
            if model["type"] == "unet":
                model["checkpoint"] = str(_random_unet(work, spec))
        spec["output"]["path"] = str(work / "out" / Path(spec["output"]["path"]).name)
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        jobs.append(path)
    return jobs


def _random_unet(work: Path, spec: dict[str, Any]) -> Path:
    """A U-Net checkpoint of seed 0 for the job's bands, four classes (the format ``geoseg train`` writes)."""
    import torch

    try:
        from geoseg.models.unet.meta import SidecarClass, UNetSidecar
        from geoseg.models.unet.model import UNet, save_unet
    except ImportError:  # before the package was laid out in stage folders
        from geoseg.models.unet_meta import SidecarClass, UNetSidecar  # type: ignore[no-redef]

        from geoseg.models.unet import UNet, save_unet  # type: ignore[no-redef,attr-defined]

    path = work / "unet_random.pt"
    if path.exists():
        return path
    bands = list(spec["inputs"]["bands"])
    torch.manual_seed(0)
    net = UNet(len(bands), 4, depth=3, width=16)
    classes = [SidecarClass(value=i + 1, name=f"class_{i + 1}") for i in range(4)]
    meta = UNetSidecar(bands=bands, classes=classes, depth=3, width=16, mean=[0.1] * len(bands),
                       std=[0.05] * len(bands), receptive_field=0)  # fmt: skip
    return save_unet(path, net, meta)


def _run_job() -> Any:
    try:
        from geoseg import run_job
    except ImportError:  # before the Python API
        from geoseg.runner import run_job  # type: ignore[no-redef]
    return run_job


def run(out: Path) -> None:
    """Run every job in one embedded Ray (workers register the tiny SAM); write {job: {file: digest}}."""
    import ray

    from geoseg.spec import load_spec
    from geoseg.testutils.tiny_sam import register_tiny_sam

    register_tiny_sam()
    hook = {"worker_process_setup_hook": "geoseg.testutils.tiny_sam.register_tiny_sam"}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env=hook, log_to_driver=False)
    result: dict[str, Any] = {}
    global WORK
    with tempfile.TemporaryDirectory(prefix="geoseg-outputs-") as tmp:
        work = WORK = Path(tmp)
        for job in _prepare_jobs(work):
            try:
                _run_job()(load_spec(job), overwrite=True, progress=False)
                rc = "ok"
            except Exception as err:  # a job that fails must fail the same way after the change
                rc = f"{type(err).__name__}: {err}"
            files = sorted(p for p in (work / "out").glob("*") if p.is_file())
            result[job.stem] = {"rc": rc, "files": {p.name: _file_digest(p) for p in files}}
            print(f"{job.stem}: {rc}, {len(files)} files", flush=True)
            shutil.rmtree(work / "out", ignore_errors=True)
    ray.shutdown()
    out.write_text(json.dumps(result, indent=1, sort_keys=True))


def diff(a: Path, b: Path) -> int:
    """Print every difference between two digests; exit 1 when there is one."""
    left, right = json.loads(a.read_text()), json.loads(b.read_text())
    diffs = list(_diffs(left, right, ""))
    for line in diffs:
        print(line)
    print("identical" if not diffs else f"{len(diffs)} differences")
    return 1 if diffs else 0


def _diffs(x: Any, y: Any, where: str):
    if isinstance(x, dict) and isinstance(y, dict):
        for key in sorted(set(x) | set(y)):
            if key not in x or key not in y:
                yield f"{where}/{key}: only in {'after' if key not in x else 'before'}"
            else:
                yield from _diffs(x[key], y[key], f"{where}/{key}")
    elif x != y:
        yield f"{where}: {x!r} != {y!r}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_run = sub.add_parser("run")
    p_run.add_argument("--out", type=Path, required=True)
    p_diff = sub.add_parser("diff")
    p_diff.add_argument("before", type=Path)
    p_diff.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.cmd == "run":
        run(args.out)
        return 0
    return diff(args.before, args.after)


if __name__ == "__main__":
    sys.exit(main())
