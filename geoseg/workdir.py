"""The job's work directory: one file per finished tile (the basis for ``--resume``), and a manifest.

Each tile's result is one ``.npz`` (no pickles): its core rasters, its edge strips, its fragments and its stage
seconds as JSON; blended layers also keep each tile's class probabilities (``scores/<layer>/<tile>.npy``). Files are
written to a temp name and renamed (:mod:`geoseg.atomic`), so a killed job never leaves a half-written tile behind.
This module alone knows the layout; the rest of geoseg reads and writes typed values through it.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.atomic import atomic_write
from geoseg.errors import SpecError
from geoseg.spec import JobSpec
from geoseg.stitch import EdgeStrips, Fragment, LayerTile

MANIFEST = "manifest.json"


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


def fingerprint(spec: JobSpec) -> str:
    """Hash of everything that decides a tile's result (inputs, AOI, tiling, models), not of output/compute."""
    parts = spec.model_dump(mode="json", include={"inputs", "aoi", "tiling", "models"})
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def prepare(work_dir: Path, spec: JobSpec, resume: bool) -> None:
    """Create or check the work dir. Without ``resume`` earlier tiles are discarded."""
    manifest = work_dir / MANIFEST
    if resume and manifest.exists():
        found = json.loads(manifest.read_text()).get("fingerprint")
        if found != fingerprint(spec):
            raise SpecError(
                f"{work_dir} holds tiles of a different job (inputs, tiling or models changed): "
                "run without --resume to start over, or set output.work_dir"
            )
        return
    for stale in ("tiles", "scores"):
        if (work_dir / stale).exists():
            shutil.rmtree(work_dir / stale)
    (work_dir / "tiles").mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"job": spec.name, "fingerprint": fingerprint(spec)}, indent=2))


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
    )


def _layer_arrays(name: str, layer: LayerTile, core: np.ndarray) -> dict[str, np.ndarray]:
    arrays = {f"core.{name}": core}
    for side in ("top", "bottom", "left", "right"):
        arrays[f"in.{name}.{side}"] = layer.strips.inside[side]
        arrays[f"out.{name}.{side}"] = layer.strips.outside[side]
    return arrays


def _write_npz(final: Path, arrays: dict[str, np.ndarray], doc: dict[str, Any]) -> None:
    def write(tmp: Path) -> None:
        np.savez_compressed(tmp, doc=np.array(json.dumps(doc)), **arrays)  # type: ignore[arg-type]  # numpy's stub

    atomic_write(final, write)


def save_tile(
    work_dir: Path, tile_id: str, layers: dict[str, LayerTile], cores: dict[str, np.ndarray], seconds: StageSeconds
) -> None:
    """Write a finished tile atomically."""
    arrays: dict[str, np.ndarray] = {}
    doc: dict[str, Any] = {"meta": {"seconds": _seconds_json(seconds)}, "layers": {}}
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


def load_tile(work_dir: Path, tile_id: str) -> SavedTile | None:
    """A saved tile, or None if it was not finished."""
    path = tile_path(work_dir, tile_id)
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        doc = json.loads(str(data["doc"]))
        layers = {}
        for name, frags in doc["layers"].items():
            strips = EdgeStrips(
                {s: data[f"in.{name}.{s}"] for s in ("top", "bottom", "left", "right")},
                {s: data[f"out.{name}.{s}"] for s in ("top", "bottom", "left", "right")},
            )
            layers[name] = LayerTile([_fragment_from_json(f) for f in frags], strips)
    return SavedTile(layers, StageSeconds(**doc["meta"].get("seconds", {})))


def load_core(work_dir: Path, tile_id: str, layer: str) -> np.ndarray | None:
    """One layer's core raster of a saved tile; None if the tile or that layer was not finished."""
    path = tile_path(work_dir, tile_id)
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        key = f"core.{layer}"
        return data[key] if key in data.files else None
