"""Synthetic field scenes with a known answer, written window by window (any size, bounded memory).

Fields are axis-aligned rectangles in a jittered grid of cells; neighbouring cells are sometimes joined into one
big field (larger than a tile, crossing tile edges and corners). Fields never touch (a gap of at least two pixels of
bare soil). Inside a field NDVI is ~0.8, outside ~0.1, so ``field_regions`` with ``erode_px: 0`` and a threshold of
0.5 must find exactly these fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.windows import Window

FIELD = {"red": 0.05, "nir": 0.45}
"""Reflectance inside fields (NDVI 0.8)."""
BARE = {"red": 0.20, "nir": 0.25}
"""Reflectance outside fields (NDVI 0.11)."""


@dataclass(frozen=True)
class FieldScene:
    """Paths of the written bands and the true fields (pixel boxes: col0, row0, col1, row1, exclusive ends)."""

    red: Path
    nir: Path
    transform: Affine
    crs: str
    width: int
    height: int
    boxes: list[list[tuple[int, int, int, int]]]
    """One list of pixel boxes per field (a field may be an L of two boxes)."""

    def truth_polygons(self) -> list[shapely.Geometry]:
        """True fields in map coordinates."""
        a, _, c, _, e, f = self.transform[:6]
        out = []
        for parts in self.boxes:
            polys = [shapely.box(c + a * c0, f + e * r1, c + a * c1, f + e * r0) for c0, r0, c1, r1 in parts]
            out.append(shapely.union_all(polys))
        return out


def _layout(width: int, height: int, cell: int, rng: np.random.Generator) -> list[list[tuple[int, int, int, int]]]:
    """Fields in a jittered grid; about a fifth join 2x2 cells, some are L-shaped across a cell corner."""
    rows, cols = height // cell, width // cell
    taken = np.zeros((rows, cols), bool)
    fields = []
    for r in range(rows):
        for c in range(cols):
            if taken[r, c]:
                continue
            big = r + 1 < rows and c + 1 < cols and not taken[r : r + 2, c : c + 2].any() and rng.random() < 0.2
            span = 2 if big else 1
            taken[r : r + span, c : c + span] = True
            m = rng.integers(2, max(3, cell // 6), size=4)
            box = (c * cell + m[0], r * cell + m[1], (c + span) * cell - m[2], (r + span) * cell - m[3])
            if big and rng.random() < 0.5:  # an L: cut a notch out of the bottom-right
                cx, cy = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
                fields.append([(box[0], box[1], box[2], cy), (box[0], cy, cx, box[3])])
            else:
                fields.append([box])
    return fields


def write_field_scene(
    folder: Path,
    width: int,
    height: int,
    cell: int = 100,
    seed: int = 0,
    pixel_size: float = 10.0,
    crs: str = "EPSG:32633",
    block: int = 1024,
) -> FieldScene:
    """Write red and NIR GeoTIFFs of a synthetic field scene, block by block."""
    rng = np.random.default_rng(seed)
    fields = _layout(width, height, cell, rng)
    transform = Affine(pixel_size, 0, 500000.0, 0, -pixel_size, 5000000.0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {band: folder / f"{band}.tif" for band in ("red", "nir")}
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "uint16", "crs": crs,
        "transform": transform, "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
        "nodata": 0,
    }  # fmt: skip
    boxes = np.array([b for parts in fields for b in parts])
    with rasterio.open(paths["red"], "w", **profile) as red, rasterio.open(paths["nir"], "w", **profile) as nir:
        for r0 in range(0, height, block):
            for c0 in range(0, width, block):
                win = Window(c0, r0, min(block, width - c0), min(block, height - r0))
                inside = _paint(boxes, win)
                for dst, band in ((red, "red"), (nir, "nir")):
                    values = np.where(inside, FIELD[band], BARE[band]) * 10000
                    dst.write(values.astype(np.uint16), 1, window=win)
    return FieldScene(paths["red"], paths["nir"], transform, crs, width, height, fields)


def _paint(boxes: np.ndarray, win: Window) -> np.ndarray:
    c0, r0, w, h = int(win.col_off), int(win.row_off), int(win.width), int(win.height)
    inside = np.zeros((h, w), bool)
    hit = (boxes[:, 0] < c0 + w) & (boxes[:, 2] > c0) & (boxes[:, 1] < r0 + h) & (boxes[:, 3] > r0)
    for bc0, br0, bc1, br1 in boxes[hit]:
        inside[max(br0 - r0, 0) : max(br1 - r0, 0), max(bc0 - c0, 0) : max(bc1 - c0, 0)] = True
    return inside


def field_job(scene: FieldScene, output: Path, tile_size: int = 256, **compute: object) -> dict:
    """A job spec (as a dict) running ``field_regions`` exactly on a field scene."""
    return {
        "name": "synthetic-fields",
        "inputs": {"bands": {"red": {"path": str(scene.red)}, "nir": {"path": str(scene.nir)}}, "scale": 0.0001},
        "tiling": {"tile_size": tile_size, "halo": 8},
        "models": [{"type": "field_regions", "name": "fields", "threshold": 0.5, "erode_px": 0}],
        "output": {"path": str(output), "masks": True},
        "compute": {"batch_size": 2, **compute},
    }
