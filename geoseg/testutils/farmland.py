"""A synthetic farmland scene with a known answer for the field delineator (in memory, small).

A grid of rectangular cells separated by 3 px tree lines: bright bare, dark bare, stubble and green fields, one
wood and one pond (water with a wooded margin). Two neighbouring cells form one large field (no tree line between
them) that crosses tile edges; two other neighbours are different crops with no tree line between them (only
the change of crop separates them); and two neighbours of one crop are split only by a faint 1 px lane (a farm
track, pixel by pixel no stronger than the fields' noise) that stops short of the tree line at one end, so that
the two fields also touch through a gap. Reflectances are typical top-of-atmosphere values (green, red, NIR, SWIR);
fields carry a little noise, woods and tree lines strong texture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BANDS = ("green", "red", "nir", "swir16")
SPECTRA = {
    "bright_bare": (0.12, 0.15, 0.22, 0.30),
    "dark_bare": (0.09, 0.10, 0.16, 0.20),
    "stubble": (0.11, 0.12, 0.20, 0.26),
    "green": (0.09, 0.055, 0.35, 0.20),
    "wood": (0.06, 0.04, 0.20, 0.09),
    "water": (0.07, 0.05, 0.03, 0.01),
    "track": (0.113, 0.133, 0.19, 0.28),
}
EDGES = (0, 150, 310, 450, 600)
"""Cell edges along both axes (px); the scene is 600 x 600."""
LAYOUT = (
    ("green", "bright_bare", "big", "big"),
    ("dark_bare", "wood", "stubble", "green"),
    ("stubble", "green", "pond", "bright_bare"),
    ("bright_bare", "bright_bare", "green", "dark_bare"),
)
"""Cover of each cell; ``big`` cells form one stubble field; cells (3, 2) and (3, 3) share no tree line; cells
(3, 0) and (3, 1) share a track with a gap instead."""
TREE_LINE_PX = 3
TRACK_GAP_PX = 6
"""Length of the gap between the track's end and the tree line north of it."""


@dataclass(frozen=True)
class Farmland:
    """Bands (C, H, W) float32 reflectance in ``BANDS`` order, the true fields and the non-field land."""

    pixels: np.ndarray
    fields: np.ndarray
    """int32 (H, W): 1..N per true field, 0 elsewhere."""
    woods: np.ndarray
    """bool (H, W): the wood cell."""
    pond: np.ndarray
    """bool (H, W): the pond cell (water and its wooded margin)."""


def farmland(seed: int = 0) -> Farmland:
    """Build the scene (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    size = EDGES[-1]
    cover = np.full((size, size), "wood", dtype=object)
    fields = np.zeros((size, size), np.int32)
    woods = np.zeros((size, size), bool)
    pond = np.zeros((size, size), bool)
    big_label = 0
    for row, names in enumerate(LAYOUT):
        for col, name in enumerate(names):
            r0, r1, c0, c1 = EDGES[row], EDGES[row + 1], EDGES[col], EDGES[col + 1]
            cell = (slice(r0, r1), slice(c0, c1))
            if name == "wood":
                woods[cell] = True
            elif name == "pond":
                pond[cell] = True
                cover[r0 + 25 : r1 - 25, c0 + 25 : c1 - 25] = "water"
            else:
                label = big_label if name == "big" and big_label else int(fields.max()) + 1
                big_label = label if name == "big" else big_label
                cover[cell] = "stubble" if name == "big" else name
                fields[cell] = label
    _tree_lines(cover, fields)
    pixels = np.zeros((len(BANDS), size, size), np.float32)
    for name, spectrum in SPECTRA.items():
        where = cover == name
        for band, value in enumerate(spectrum):
            pixels[band][where] = value
    wooded = (cover == "wood").astype(np.float32)
    pixels += rng.normal(0, 0.004, pixels.shape).astype(np.float32)
    pixels[2] += wooded * rng.normal(0, 0.05, (size, size)).astype(np.float32)  # crowns and shadows
    return Farmland(np.clip(pixels, 0.001, 1.0), fields, woods, pond)


def _tree_lines(cover: np.ndarray, fields: np.ndarray) -> None:
    """Tree lines on every cell edge, except inside the big field and between cells (3, 2) and (3, 3)."""
    half = TREE_LINE_PX // 2
    for edge in EDGES[1:-1]:
        line = slice(edge - half, edge - half + TREE_LINE_PX)
        cover[line, :] = cover[:, line] = "wood"
        fields[line, :] = fields[:, line] = 0
    line = slice(EDGES[3] - half, EDGES[3] - half + TREE_LINE_PX)
    for row, fill in ((0, "stubble"), (3, "green")):
        rows = slice(EDGES[row] + (half + 1 if row else 0), EDGES[row + 1] - (half + 1 if row < 3 else 0))
        cover[rows, line] = fill
        fields[rows, line] = fields[rows, line.start - 1][:, None]
    line = slice(EDGES[1] - half, EDGES[1] - half + TREE_LINE_PX)  # the track between cells (3, 0) and (3, 1)
    rows = slice(EDGES[3] + half + 1, EDGES[4])
    cover[rows, line] = "bright_bare"
    fields[rows, line.start] = fields[rows, line.start - 1]
    fields[rows, line.start + 1 : line.stop] = fields[rows, line.stop][:, None]
    track = slice(EDGES[3] + half + 1 + TRACK_GAP_PX, EDGES[4])
    cover[track, EDGES[1]] = "track"
    fields[track, EDGES[1]] = 0
