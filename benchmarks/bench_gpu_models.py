"""Every CUDA model path once, bf16, random weights: tiles/s and peak GPU memory per model (for a session with a GPU).

    python benchmarks/bench_gpu_models.py          # cuda: SAM vit_b and vit_h encoders, ftw, delineate_anything
    python benchmarks/bench_gpu_models.py --device cpu --tiles 2 --size 256 --models ftw   # a dry run on CPU

Each model runs exactly as a model actor runs it (``SamModel``'s encoder batches through ``encode_tiles`` with the
bf16 dtype; ``FtwFieldsModel.predict`` and ``DelineateAnythingModel.predict``, both with bf16 autocast on CUDA) on
``--tiles`` synthetic read windows of ``--size`` px in batches of ``--batch``, after one warm-up batch. The weights
are random (the cost of these networks does not depend on weight values; ftw's and delineate_anything's
post-processing does a little: random weights give many small fields). Prints one JSON line per model: tiles/s,
seconds, peak GPU memory (``torch.cuda.max_memory_allocated``) and the device.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geoseg.models.ftw.model import FtwFieldsModel
from geoseg.models.ftw.variants import VARIANTS
from geoseg.models.sam.encoder import autocast_dtype, encode_tiles
from geoseg.models.sam.variants import variant_config
from geoseg.models.sam.weights import build_sam_model
from geoseg.spec.models import DelineateAnythingSpec, FtwSpec
from geoseg.testutils.ftw import random_ftw_state, write_ftw_checkpoint

WINDOW = ["red", "green", "blue", "nir"]


def _no_contexts(batch: np.ndarray) -> list[Any]:
    """Tile contexts: neither model reads them (no prompts)."""
    return [None] * len(batch)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(run: Callable[[slice], Any], n: int, batch: int, device: str) -> dict[str, float]:
    parts = [slice(i, min(i + batch, n)) for i in range(0, n, batch)]
    run(parts[0])  # warm-up
    _sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for part in parts:
        run(part)
    _sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else float("nan")
    return {"tiles_per_s": round(n / seconds, 3), "seconds": round(seconds, 3), "peak_gpu_mib": round(peak, 1)}


def _sam(variant: str, args: argparse.Namespace, pixels: np.ndarray) -> dict[str, float]:
    sam = build_sam_model(variant_config(variant)).to(args.device).eval()
    dtype = autocast_dtype("auto", torch.device(args.device))
    images = (np.clip(pixels[:, :3].transpose(0, 2, 3, 1) / 0.3, 0, 1) * 255).astype(np.uint8)
    return _time(lambda part: encode_tiles(sam, images[part], dtype), len(images), args.batch, args.device)


def _ftw(args: argparse.Namespace, pixels: np.ndarray, folder: Path) -> dict[str, float]:
    arch = VARIANTS["ftw-3class"]
    sample = np.concatenate([pixels[0], pixels[0]]) * (10000 / 3000)
    path = write_ftw_checkpoint(folder / "ftw.pth", arch, random_ftw_state(arch, 0, sample))
    model = FtwFieldsModel(FtwSpec(type="ftw", checkpoint=str(path), windows=[WINDOW, WINDOW]), args.device)
    valid = np.ones((len(pixels), *pixels.shape[-2:]), bool)
    return _time(
        lambda p: model.predict(pixels[p], valid[p], _no_contexts(pixels[p])), len(pixels), args.batch, args.device
    )


def _delineate_anything(args: argparse.Namespace, pixels: np.ndarray, folder: Path) -> dict[str, float]:
    from copy import deepcopy

    from geoseg.models.delineate_anything.model import DelineateAnythingModel
    from geoseg.models.delineate_anything.network import build_da_net
    from geoseg.models.delineate_anything.variants import VARIANTS as DA

    path = folder / "da.pt"
    torch.save({"model": deepcopy(build_da_net(DA[args.da_variant])).half()}, path)
    spec = DelineateAnythingSpec(type="delineate_anything", variant=args.da_variant, checkpoint=str(path))
    model = DelineateAnythingModel(spec, args.device)
    rgb, valid = pixels[:, :3], np.ones((len(pixels), *pixels.shape[-2:]), bool)
    return _time(lambda p: model.predict(rgb[p], valid[p], _no_contexts(rgb[p])), len(rgb), args.batch, args.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiles", type=int, default=32)
    parser.add_argument("--size", type=int, default=640, help="read window side (512 px tile + 64 px halo)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--models", nargs="+", default=["vit_b", "vit_h", "ftw", "delineate_anything"])
    parser.add_argument("--da-variant", default="DelineateAnything")
    args = parser.parse_args()
    pixels = np.random.default_rng(0).uniform(0.0, 0.4, (args.tiles, 4, args.size, args.size)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="geoseg-gpu-") as tmp:
        for name in args.models:
            if name.startswith("vit_"):
                result = _sam(name, args, pixels)
            elif name == "ftw":
                result = _ftw(args, pixels, Path(tmp))
            else:
                result = _delineate_anything(args, pixels, Path(tmp))
            device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
            print(json.dumps({"model": name, "tiles": args.tiles, "size": args.size, **result, "device": device}))
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
