"""SAM throughput: image-encoder tiles/s and automatic-mode tiles/s for one variant on one device.

    python benchmarks/bench_sam.py --variant vit_b --device cuda --dtype bf16 --tiles 32 --batch 8

Without ``--checkpoint`` the variant runs with random weights: the encoder's cost does not depend on weight values,
so its figures are honest. Automatic mode's post-processing does depend on how many masks survive the filters;
``--filters open`` (all thresholds 0, the worst case) or ``--filters spec`` (segment-anything's defaults, under
which random weights keep almost nothing, the best case) bracket it. Tiles are synthetic fields with noise.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from affine import Affine

from geoseg.inputs.tiles import TileGrid
from geoseg.models.base import InstanceOutput, SceneInfo, TileContext
from geoseg.models.sam.encoder import autocast_dtype, enable_sdpa, encode_tiles
from geoseg.models.sam.model import SamModel
from geoseg.models.sam.variants import variant_config
from geoseg.models.sam.weights import build_sam_model, load_sam
from geoseg.spec.job import SamSpec
from geoseg.testutils.tiny_sam import register_tiny_sam

BANDS = ("red", "green", "blue")


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="vit_b", help="vit_b, vit_l, vit_h or vit_tiny")
    parser.add_argument("--checkpoint", default=None, help="local .pth; default: random weights")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default=None, help="default: bf16 on CUDA, else fp32")
    parser.add_argument("--tiles", type=int, default=8, help="tiles timed (after one warm-up batch)")
    parser.add_argument("--batch", type=int, default=4, help="tiles per encoder call")
    parser.add_argument("--tile-size", type=int, default=576, help="read-window side in pixels (512 + 2 * 32 halo)")
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--filters", choices=["open", "spec"], default="open")
    parser.add_argument("--attention", choices=["sdpa", "stock"], default="sdpa")
    parser.add_argument("--skip-automatic", action="store_true")
    return parser.parse_args()


def _tiles(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, 3, size, size) reflectance: rectangular fields of random colour, plus noise."""
    rng = np.random.default_rng(seed)
    pixels = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        edges = np.sort(rng.integers(0, size, 12))
        rows = np.searchsorted(edges, np.arange(size))
        cols = np.searchsorted(np.sort(rng.integers(0, size, 12)), np.arange(size))
        field_id = rows[:, None] * 13 + cols[None, :]
        colours = rng.uniform(0.02, 0.45, (3, field_id.max() + 1)).astype(np.float32)
        pixels[i] = colours[:, field_id] + rng.normal(0, 0.01, (3, size, size)).astype(np.float32)
    return pixels


def _model(args: argparse.Namespace) -> torch.nn.Module:
    if args.checkpoint:
        sam = load_sam(args.variant, args.checkpoint, args.device)
    else:
        sam = build_sam_model(variant_config(args.variant)).to(args.device)
    return enable_sdpa(sam) if args.attention == "sdpa" else sam


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _batches(n: int, batch: int) -> list[slice]:
    return [slice(i, min(i + batch, n)) for i in range(0, n, batch)]


def _time_encoder(
    sam: torch.nn.Module, images: np.ndarray, args: argparse.Namespace, dtype: torch.dtype | None
) -> float:
    encode_tiles(sam, images[: args.batch], dtype)  # warm-up
    _sync(args.device)
    start = time.perf_counter()
    for part in _batches(args.tiles, args.batch):
        encode_tiles(sam, images[part], dtype)
    _sync(args.device)
    return args.tiles / (time.perf_counter() - start)


def _time_automatic(model: SamModel, pixels: np.ndarray, args: argparse.Namespace) -> tuple[float, float]:
    grid = TileGrid(100_000, 100_000, args.tile_size, 0)
    valid = np.ones(pixels.shape[:1] + pixels.shape[2:], bool)
    contexts = [TileContext(grid[0, i], grid[0, i].read_transform(Affine.identity())) for i in range(len(pixels))]
    model.predict(pixels[: args.batch], valid[: args.batch], contexts[: args.batch])  # warm-up
    _sync(args.device)
    start, masks = time.perf_counter(), 0
    for part in _batches(args.tiles, args.batch):
        outputs = model.predict(pixels[part], valid[part], contexts[part])
        masks += sum(len(out.instances) for out in outputs if isinstance(out, InstanceOutput))
    _sync(args.device)
    return args.tiles / (time.perf_counter() - start), masks / args.tiles


def main() -> None:
    args = _parse()
    register_tiny_sam()
    dtype = {"fp32": None, "bf16": torch.bfloat16, None: autocast_dtype("auto", torch.device(args.device))}[args.dtype]
    pixels = _tiles(args.tiles + args.batch, args.tile_size)
    scene = SceneInfo(
        BANDS, "", (10.0, 10.0), 100.0, {b: np.percentile(pixels[:, i], np.arange(101)) for i, b in enumerate(BANDS)}
    )
    filters = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0} if args.filters == "open" else {}
    spec = SamSpec(type="sam", variant=args.variant, points_per_side=args.points_per_side, **filters)
    sam = _model(args)
    model = SamModel(spec, scene, sam, dtype)
    images = model.to_uint8(pixels, np.ones(pixels.shape[:1] + pixels.shape[2:], bool))
    threads = torch.get_num_threads()
    result: dict[str, object] = {
        "variant": args.variant,
        "weights": args.checkpoint or "random",
        "device": args.device,
        "dtype": "bf16" if dtype else "fp32",
        "attention": args.attention,
        "tile": args.tile_size,
        "batch": args.batch,
        "tiles": args.tiles,
        "torch_threads": threads,
    }
    with torch.inference_mode():
        result["encoder_tiles_per_s"] = round(_time_encoder(sam, images, args, dtype), 3)
    if not args.skip_automatic:
        rate, masks = _time_automatic(model, pixels, args)
        result.update(
            automatic_tiles_per_s=round(rate, 3),
            points_per_side=args.points_per_side,
            filters=args.filters,
            masks_per_tile=round(masks, 1),
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
