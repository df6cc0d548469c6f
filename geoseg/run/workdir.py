"""The job's work directory: one file per finished tile (the basis for ``--resume``), and a manifest whose
fingerprint (spec, input identities, checkpoint hashes) decides whether ``--resume`` may reuse the tiles.

Each tile's result is one ``.npz`` (no pickles): its core rasters, its edge strips, its fragments and its stage
seconds as JSON; blended layers also keep each tile's class probabilities (``scores/<layer>/<tile>.npy``). Files are
written to a temp name and renamed (:mod:`geoseg.atomic`), so a killed job never leaves a half-written tile behind.
This module alone knows the layout; the rest of geoseg reads and writes typed values through it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from geoseg.atomic import atomic_write
from geoseg.errors import SpecError
from geoseg.models.checkpoints import file_sha256
from geoseg.run.claim import MANIFEST, check_ours
from geoseg.spec.job import JobSpec
from geoseg.stitch.stitcher import EdgeStrips, Fragment, LayerTile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageSeconds:
    """Seconds one tile spent in each stage (the model's share of its batch); NaN for a stage not timed."""

    read: float = math.nan
    model: float = math.nan
    finish: float = math.nan


@dataclass(frozen=True)
class SavedTile:
    """A finished tile as saved: its layers and how long its stages took."""

    layers: dict[str, LayerTile]
    seconds: StageSeconds


HEAD_BYTES = 1 << 20
"""Bytes of a local input hashed for its identity: the header and the first blocks (cheap for any file size)."""


def fingerprint(spec: JobSpec, inputs: Iterable[str] = (), checkpoints: Iterable[str | Path] = ()) -> dict[str, Any]:
    """What decides a tile's result: the spec (inputs, AOI, tiling, models; not output/compute), each input's
    identity (:func:`file_identity`) and each checkpoint's sha256. Plain JSON, kept in the manifest."""
    parts = spec.model_dump(mode="json", include={"inputs", "aoi", "tiling", "models"})
    return {
        "spec": hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16],
        "inputs": {path: file_identity(path) for path in inputs},
        "checkpoints": {str(path): file_sha256(Path(path)) for path in checkpoints},
    }


def file_identity(path: str) -> dict[str, Any]:
    """A local file's size, mtime and a hash of its first MiB; for a URI, what GDAL reads without a download
    (its header and first block), since GDAL's bindings here expose no ETag."""
    if "://" in path or path.startswith("/vsi"):
        return {"remote": _remote_identity(path)}
    stat = os.stat(path)
    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(HEAD_BYTES)).hexdigest()[:16]
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "head": head}


def _remote_identity(path: str) -> str:
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as src:
        rows, cols = src.block_shapes[0]
        block = src.read(1, window=Window(0, 0, min(cols, src.width), min(rows, src.height)))
        header = json.dumps([src.width, src.height, src.count, src.dtypes, list(src.transform), str(src.crs)])
    return hashlib.sha256(header.encode() + block.tobytes()).hexdigest()[:16]


def _what_changed(found: Any, now: dict[str, Any]) -> str:
    """The first difference between a manifest's fingerprint and the current one, in words."""
    if not isinstance(found, dict) or found.get("spec") != now["spec"]:
        return "the job spec (inputs, AOI, tiling or models)"
    for kind, label in (("inputs", "input"), ("checkpoints", "checkpoint")):
        before, after = found.get(kind, {}), now[kind]
        for path in sorted(set(before) | set(after)):
            if path not in before:
                return f"{label} {path} (new)"
            if path not in after:
                return f"{label} {path} (no longer used)"
            if before[path] != after[path]:
                keys = [k for k in after[path] if before[path].get(k) != after[path][k]] if kind == "inputs" else []
                return f"{label} {path}" + (f" ({', '.join(keys)})" if keys else " (content)")
    return ""


def job_key(now: dict[str, Any]) -> str:
    """A short digest of a fingerprint, stamped on every tile file the job writes."""
    return hashlib.sha256(json.dumps(now, sort_keys=True).encode()).hexdigest()[:16]


def prepare(
    work_dir: Path,
    spec: JobSpec,
    resume: bool,
    inputs: Iterable[str] = (),
    checkpoints: Iterable[str | Path] = (),
) -> str:
    """Create or check the work dir. Without ``resume`` earlier tiles are discarded; with it, the work dir must hold
    the same job: same spec, same input files (size, mtime, first MiB) and same checkpoints (sha256).

    Returns:
        The job's key (:func:`job_key`): tiles saved with another key are redone on resume.

    Raises:
        WorkDirError: the folder holds files geoseg did not write (:func:`geoseg.run.claim.check_ours`).
        SpecError: ``resume`` and the work dir holds another job's tiles.
    """
    check_ours(work_dir)
    manifest = work_dir / MANIFEST
    now = fingerprint(spec, inputs, checkpoints)
    if resume and manifest.exists():
        found = _read_manifest(manifest)
        changed = "" if found is None else _what_changed(found.get("fingerprint"), now)
        if changed:
            raise SpecError(
                f"{work_dir} holds tiles of a different job: {changed} changed since; "
                "run without --resume to start over, or set output.work_dir"
            )
        if found is None:  # torn: each tile's own key decides
            log.warning("%s is unreadable; every saved tile is checked against this job", manifest)
            _write_manifest(manifest, spec.name, now)
        return job_key(now)
    for stale in ("tiles", "scores"):
        if (work_dir / stale).exists():
            shutil.rmtree(work_dir / stale)
    (work_dir / "tiles").mkdir(parents=True, exist_ok=True)
    _write_manifest(manifest, spec.name, now)
    return job_key(now)


def _read_manifest(manifest: Path) -> dict[str, Any] | None:
    """The manifest's content; None when it is torn or not JSON (a power cut before fsync existed)."""
    try:
        found = json.loads(manifest.read_text())
    except (ValueError, UnicodeDecodeError):
        return None
    return found if isinstance(found, dict) else None


def _write_manifest(manifest: Path, job: str, now: dict[str, Any]) -> None:
    text = json.dumps({"job": job, "fingerprint": now}, indent=2)
    atomic_write(manifest, lambda tmp: tmp.write_text(text))


def discard_if_unused(work_dir: Path) -> None:
    """Remove a work dir that holds no finished tile (a job that failed before any work leaves nothing)."""
    tiles = work_dir / "tiles"
    if work_dir.is_dir() and not (tiles.is_dir() and any(tiles.iterdir())):
        shutil.rmtree(work_dir)


def tile_path(work_dir: Path, tile_id: str) -> Path:
    return work_dir / "tiles" / f"{tile_id}.npz"


def _fragment_json(f: Fragment) -> dict[str, Any]:
    return {
        "label": f.label,
        "geometry": f.geometry.hex(),
        "pixels": f.pixels,
        "score_sum": f.score_sum,
        "cls": f.cls,
        "key": f.key,
        "stability": f.stability,
        "attrs": f.attrs,
        "class_counts": None if f.class_counts is None else f.class_counts.tolist(),
        "index_sums": f.index_sums,
        "index_counts": f.index_counts,
        "index_hists": {k: v.tolist() for k, v in f.index_hists.items()},
        "masked_pixels": f.masked_pixels,
        "edge_sides": f.edge_sides,
        "edge_sides_masked": f.edge_sides_masked,
    }


def _fragment_from_json(d: dict[str, Any]) -> Fragment:
    return Fragment(
        label=d["label"],
        geometry=bytes.fromhex(d["geometry"]),
        pixels=d["pixels"],
        score_sum=d["score_sum"],
        cls=d["cls"],
        key=d["key"],
        stability=d["stability"],
        attrs=d["attrs"],
        class_counts=None if d["class_counts"] is None else np.asarray(d["class_counts"], np.int64),
        index_sums=d["index_sums"],
        index_counts=d["index_counts"],
        index_hists={k: np.asarray(v, np.int64) for k, v in d["index_hists"].items()},
        masked_pixels=d.get("masked_pixels", 0),
        edge_sides=d.get("edge_sides", 0),
        edge_sides_masked=d.get("edge_sides_masked", 0),
    )


def _layer_arrays(name: str, layer: LayerTile, core: np.ndarray) -> dict[str, np.ndarray]:
    arrays = {f"core.{name}": core}
    for side in ("top", "bottom", "left", "right"):
        arrays[f"in.{name}.{side}"] = layer.strips.inside[side]
        arrays[f"out.{name}.{side}"] = layer.strips.outside[side]
    return arrays


def _write_npz(final: Path, arrays: dict[str, np.ndarray], doc: dict[str, Any]) -> None:
    """An ``.npz`` as ``np.savez_compressed`` writes it, at zlib level 1: 5x faster than its level 6 on class and
    label rasters, about as small."""

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            for name, array in {"doc": np.array(json.dumps(doc)), **arrays}.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)

    atomic_write(final, write)


def save_tile(
    work_dir: Path,
    tile_id: str,
    layers: dict[str, LayerTile],
    cores: dict[str, np.ndarray],
    seconds: StageSeconds,
    job: str = "",
) -> None:
    """Write a finished tile atomically, stamped with the key of the job that made it (:func:`job_key`)."""
    arrays: dict[str, np.ndarray] = {}
    doc: dict[str, Any] = {"meta": {"seconds": _seconds_json(seconds), "job": job}, "layers": {}}
    for name, layer in layers.items():
        arrays |= _layer_arrays(name, layer, cores[name])
        doc["layers"][name] = [_fragment_json(f) for f in layer.fragments]
    _write_npz(tile_path(work_dir, tile_id), arrays, doc)


def _seconds_json(seconds: StageSeconds) -> dict[str, float]:
    return {k: v for k, v in asdict(seconds).items() if not math.isnan(v)}


def add_layer(work_dir: Path, tile_id: str, name: str, layer: LayerTile, core: np.ndarray) -> None:
    """Add a layer computed later (a blended one) to a saved tile, atomically."""
    path = tile_path(work_dir, tile_id)
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files if key != "doc"}
        doc = json.loads(str(data["doc"]))
    arrays |= _layer_arrays(name, layer, core)
    doc["layers"][name] = [_fragment_json(f) for f in layer.fragments]
    _write_npz(path, arrays, doc)


def scores_path(work_dir: Path, layer: str, tile_id: str) -> Path:
    return work_dir / "scores" / layer / f"{tile_id}.npy"


def save_scores(work_dir: Path, layer: str, tile_id: str, scores: np.ndarray) -> None:
    """Keep a tile's class probabilities (float16, read window) for blending with its neighbours."""
    final = scores_path(work_dir, layer, tile_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(final, lambda tmp: np.save(tmp, scores.astype(np.float16)))


def load_scores(work_dir: Path, layer: str, tile_id: str) -> np.ndarray | None:
    """A tile's saved class probabilities, or None if it has none."""
    path = scores_path(work_dir, layer, tile_id)
    return np.load(path, allow_pickle=False) if path.exists() else None


class StaleTileError(Exception):
    """A saved tile that may not be resumed: another job made it, or it cannot be read whole."""


UNREADABLE = (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile, zlib.error)
"""What reading a torn, emptied or bit-flipped tile file raises."""


def load_tile(work_dir: Path, tile_id: str, job: str | None = None) -> SavedTile | None:
    """A saved tile, or None if it was not finished.

    Args:
        work_dir: The work dir.
        tile_id: The tile.
        job: The resuming job's key (:func:`job_key`): the file must carry it, and every member's CRC is checked.

    Raises:
        StaleTileError: ``job`` is given and the file was saved by another job, or is damaged.
    """
    path = tile_path(work_dir, tile_id)
    if not path.exists():
        return None
    try:
        if job is not None:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                raise zipfile.BadZipFile(f"bad CRC in {bad}")
        return _read_tile(path, job)
    except UNREADABLE as err:
        raise StaleTileError(f"unreadable ({type(err).__name__}: {err})") from None


def _read_tile(path: Path, job: str | None) -> SavedTile:
    with np.load(path, allow_pickle=False) as data:
        doc = json.loads(str(data["doc"]))
        if job is not None and doc["meta"].get("job") != job:
            raise StaleTileError("saved by another job")
        layers = {}
        for name, frags in doc["layers"].items():
            strips = EdgeStrips(
                {s: data[f"in.{name}.{s}"] for s in ("top", "bottom", "left", "right")},
                {s: data[f"out.{name}.{s}"] for s in ("top", "bottom", "left", "right")},
            )
            layers[name] = LayerTile([_fragment_from_json(f) for f in frags], strips)
    return SavedTile(layers, StageSeconds(**doc["meta"].get("seconds", {})))


def discard_tile(work_dir: Path, tile_id: str) -> None:
    """Remove a tile's saved files (its tile file and its class probabilities), so that it is redone."""
    tile_path(work_dir, tile_id).unlink(missing_ok=True)
    scores = work_dir / "scores"
    if scores.is_dir():
        for layer in scores.iterdir():
            (layer / f"{tile_id}.npy").unlink(missing_ok=True)


def load_core(work_dir: Path, tile_id: str, layer: str) -> np.ndarray | None:
    """One layer's core raster of a saved tile; None if the tile or that layer was not finished."""
    path = tile_path(work_dir, tile_id)
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        key = f"core.{layer}"
        return data[key] if key in data.files else None


@dataclass
class TileStatus:
    """How one tile went: a row of the tile index layer."""

    status: TileState = "pending"
    attempts: int = 0
    """Times the model pass submitted it."""
    seconds: StageSeconds = field(default_factory=StageSeconds)
    error: str | None = None


TileState = Literal["pending", "retrying", "done", "resumed", "failed"]
"""pending: not run yet; retrying: failed, queued again; done: finished now; resumed: finished by an earlier run
(kept from the work dir); failed: failed after its retries."""
