#!/usr/bin/env python
"""Candidates, chip sheets and reference features for the aerial (NAIP) field reference, labelled by eye.

    python benchmarks/reference/aerial_chips.py candidates 20180716 test points --n 60 --seed 1 --out /tmp/c/p.json
    python benchmarks/reference/aerial_chips.py candidates 20180716 test pairs --n 40 --seed 2 --out /tmp/c/q.json
    python benchmarks/reference/aerial_chips.py sheets /tmp/c/p.json            # -> /tmp/c/p_01.png, ...
    #   look at each sheet; write "<candidate id> <label>" per candidate into a decisions file
    python benchmarks/reference/aerial_chips.py add /tmp/c/p.json decisions.txt benchmarks/reference/aerial.geojson

The imagery is ``/work/shared/data/naip_tune/`` (``--data``): one NAIP file per date (4 bands, uint8, 5 m). Splits
are rows of each file: ``tune`` above row :data:`TUNE_MAX_ROW`, ``test`` from row :data:`TEST_MIN_ROW` (the south
part; the 40 rows between are left out so that no tune and test candidate share a field edge).

Candidates (seeded): ``points`` are random pixels of the split; ``pairs`` are two points 8-24 px (40-120 m) apart,
both on smooth pixels (5 x 5 spread of the false colour) that are not dark in NIR (water), of the kinds ``--kinds``
names, in turn: ``hard`` (the line between them crosses a pixel unlike both ends: a road, lane or ditch), ``colour``
(the ends differ: a change of crop) or ``plain`` (similar ends, nothing crossed). Sheets: 30 false-colour chips (NIR,
red, green, stretched 2-98 % over the file), 48 x 48 px around the candidate, 4x upscaled, first point ringed cyan,
second yellow. Labels: pairs ``same_field``, ``different_fields`` or ``skip``; points ``field``, ``water``, ``marsh``
(wet grass, cattail rings, pond edges), ``farmstead`` (yards, buildings, shelterbelts), ``road`` (roads and verges),
``other`` or ``skip``. ``add`` appends kept candidates (both points of a kept pair also as ``field`` points) to the
reference file with ``date``, ``split`` and ``pixel`` (column, row of the date's file).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from PIL import Image, ImageDraw
from rasterio.transform import xy
from rasterio.warp import transform as warp_transform
from scipy import ndimage as ndi

DATA = Path("/work/shared/data/naip_tune")
TUNE_MAX_ROW = 340
TEST_MIN_ROW = 380
CHIP = 48
ZOOM = 4
POINT_LABELS = ("field", "water", "marsh", "farmstead", "road", "other")
PAIR_LABELS = ("same_field", "different_fields")


def naip_path(date: str, data: Path = DATA) -> Path:
    """The NAIP file of one date."""
    return data / f"m_4709963_se_14_1_{date}.tif"


def false_colour(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 NIR, red, green, each stretched 2-98 % over the file."""
    with rasterio.open(path) as src:
        bands = src.read((4, 1, 2)).astype(np.float32)
    lo, hi = np.percentile(bands, (2, 98), axis=(1, 2))
    scaled = (bands - lo[:, None, None]) / np.maximum(hi - lo, 1)[:, None, None]
    return np.clip(scaled * 255, 0, 255).astype(np.uint8).transpose(1, 2, 0)


def split_rows(split: str, height: int) -> tuple[int, int]:
    return (0, TUNE_MAX_ROW) if split == "tune" else (TEST_MIN_ROW, height)


def candidates(args: argparse.Namespace) -> None:
    image = false_colour(naip_path(args.date, args.data)).astype(np.float32)
    height, width = image.shape[:2]
    rng = np.random.default_rng(args.seed)
    top, bottom = split_rows(args.split, height)
    mean = ndi.uniform_filter(image, (5, 5, 1))
    spread = np.sqrt(np.maximum(ndi.uniform_filter(image**2, (5, 5, 1)) - mean**2, 0)).mean(axis=2)
    smooth = spread < args.smooth_max
    margin = 6
    found: list[dict] = []
    tries = 0
    while len(found) < args.n and tries < 100000:
        tries += 1
        col, row = int(rng.integers(margin, width - margin)), int(rng.integers(top + margin, bottom - margin))
        if args.kind == "points":
            found.append({"id": len(found) + 1, "pixel": [[col, row]]})
            continue
        angle, dist = rng.uniform(0, np.pi), rng.uniform(8, 24)
        col2, row2 = round(col + dist * np.cos(angle)), round(row + dist * np.sin(angle))
        if not (margin <= col2 < width - margin and top + margin <= row2 < bottom - margin):
            continue
        if not (smooth[row, col] and smooth[row2, col2]) or min(image[row, col, 0], image[row2, col2, 0]) < 80:
            continue  # rough, or water (dark in NIR)
        line = np.linspace((row, col), (row2, col2), 30).round().astype(int)
        ends = (image[row, col] + image[row2, col2]) / 2
        crossed = np.abs(image[line[:, 0], line[:, 1]] - ends).sum(axis=1).max() > args.cross_min
        colour = np.abs(image[row, col] - image[row2, col2]).sum() > args.cross_min
        kind = "hard" if crossed and not colour else "colour" if colour else "plain"
        kinds = args.kinds.split(",")
        if kind != kinds[len(found) % len(kinds)]:
            continue
        found.append({"id": len(found) + 1, "pixel": [[col, row], [col2, row2]], "kind": kind})
    header = {"date": args.date, "split": args.split, "kind": args.kind, "seed": args.seed, "n": args.n}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"header": header, "candidates": found}, indent=0))
    print(f"{len(found)} candidates -> {args.out}")


def sheets(args: argparse.Namespace) -> None:
    batch = json.loads(args.batch.read_text())
    image = false_colour(naip_path(batch["header"]["date"], args.data))
    half = CHIP // 2
    padded = np.pad(image, ((half, half), (half, half), (0, 0)))
    size = CHIP * ZOOM
    items = batch["candidates"]
    for sheet, start in enumerate(range(0, len(items), 30), start=1):
        canvas = Image.new("RGB", (6 * (size + 8), 5 * (size + 22)), "white")
        draw = ImageDraw.Draw(canvas)
        for k, item in enumerate(items[start : start + 30]):
            points = np.array(item["pixel"])
            centre = points.mean(axis=0).round().astype(int)
            chip = padded[centre[1] : centre[1] + CHIP, centre[0] : centre[0] + CHIP]
            tile = Image.fromarray(chip).resize((size, size), Image.Resampling.NEAREST)
            x0, y0 = (k % 6) * (size + 8), (k // 6) * (size + 22)
            canvas.paste(tile, (x0, y0 + 18))
            draw.text((x0 + 2, y0 + 2), str(item["id"]), fill="black")
            for point, colour in zip(points, ("cyan", "yellow"), strict=False):
                px = x0 + (point[0] - centre[0] + half) * ZOOM + ZOOM // 2
                py = y0 + 18 + (point[1] - centre[1] + half) * ZOOM + ZOOM // 2
                draw.ellipse((px - 6, py - 6, px + 6, py + 6), outline=colour, width=2)
        path = args.batch.with_name(f"{args.batch.stem}_{sheet:02d}.png")
        canvas.save(path)
        print(path)


def add(args: argparse.Namespace) -> None:
    batch = json.loads(args.batch.read_text())
    header = batch["header"]
    labels = dict(line.split()[:2] for line in args.decisions.read_text().splitlines() if line.strip())
    with rasterio.open(naip_path(header["date"], args.data)) as src:
        transform, crs = src.transform, src.crs
    empty: dict[str, Any] = {"type": "FeatureCollection", "features": []}
    reference: dict[str, Any] = json.loads(args.reference.read_text()) if args.reference.exists() else empty
    features: list[dict[str, Any]] = reference["features"]
    next_id = max((f["properties"]["id"] for f in features), default=0) + 1

    def lonlat(pixel: list[int]) -> list[float]:
        x, y = xy(transform, pixel[1], pixel[0])
        lon, lat = warp_transform(crs, "EPSG:4326", [x], [y])
        return [round(lon[0], 7), round(lat[0], 7)]

    def append(label: str, pixels: list[list[int]]) -> None:
        nonlocal next_id
        coords = [lonlat(p) for p in pixels]
        kind = "Point" if len(coords) == 1 else "LineString"
        geometry = {"type": kind, "coordinates": coords[0] if len(coords) == 1 else coords}
        props = {"id": next_id, "label": label, "split": header["split"], "date": header["date"], "pixel": pixels}
        features.append({"type": "Feature", "properties": props, "geometry": geometry})
        next_id += 1

    kept = 0
    for item in batch["candidates"]:
        label = labels.get(str(item["id"]), "skip")
        if label == "skip":
            continue
        allowed = PAIR_LABELS if len(item["pixel"]) == 2 else POINT_LABELS
        if label not in allowed:
            raise SystemExit(f"candidate {item['id']}: label {label!r} is not one of {allowed}")
        append(label, item["pixel"])
        kept += 1
        if len(item["pixel"]) == 2:
            for pixel in item["pixel"]:
                append("field", [pixel])
    reference["features"] = features
    args.reference.write_text(json.dumps(reference).replace('}}, {"type"', '}},\n{"type"'))
    print(f"kept {kept} of {len(batch['candidates'])}; {len(features)} features in {args.reference}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    sub = parser.add_subparsers(dest="command", required=True)
    cand = sub.add_parser("candidates")
    cand.add_argument("date")
    cand.add_argument("split", choices=("tune", "test"))
    cand.add_argument("kind", choices=("points", "pairs"))
    cand.add_argument("--n", type=int, default=60)
    cand.add_argument("--seed", type=int, default=1)
    cand.add_argument("--smooth-max", type=float, default=10.0)
    cand.add_argument("--cross-min", type=float, default=90.0)
    cand.add_argument("--kinds", default="hard,plain", help="pair kinds in turn: hard, colour, plain")
    cand.add_argument("--out", type=Path, required=True)
    sheet = sub.add_parser("sheets")
    sheet.add_argument("batch", type=Path)
    adding = sub.add_parser("add")
    adding.add_argument("batch", type=Path)
    adding.add_argument("decisions", type=Path)
    adding.add_argument("reference", type=Path)
    args = parser.parse_args()
    {"candidates": candidates, "sheets": sheets, "add": add}[args.command](args)


if __name__ == "__main__":
    main()
