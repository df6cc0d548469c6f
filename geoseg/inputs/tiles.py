"""The tile grid: pure, picklable values, no I/O.

A tile *owns* its core window; the model *reads* the core plus a halo on every side. Read windows all have the same
shape (``tile_size + 2 * halo``) so tiles batch together; at the scene's edges they reach past the scene and those
pixels read as invalid.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

from affine import Affine
from rasterio.windows import Window


@dataclass(frozen=True)
class Tile:
    """One tile of a :class:`TileGrid`."""

    row: int
    """Grid row (0 at the top)."""
    col: int
    """Grid column (0 at the left)."""
    core: Window
    """Pixels this tile owns, in scene pixel coordinates; cores partition the scene."""
    read: Window
    """Core plus halo, in scene pixel coordinates; may extend past the scene."""

    @property
    def id(self) -> str:
        return f"r{self.row:04d}_c{self.col:04d}"

    @property
    def core_in_read(self) -> tuple[slice, slice]:
        """Row and column slices that cut the core out of an array over the read window."""
        r0 = int(self.core.row_off - self.read.row_off)
        c0 = int(self.core.col_off - self.read.col_off)
        return slice(r0, r0 + int(self.core.height)), slice(c0, c0 + int(self.core.width))

    def read_transform(self, scene_transform: Affine) -> Affine:
        """Affine transform of the read window's pixel grid."""
        return scene_transform @ Affine.translation(self.read.col_off, self.read.row_off)

    def core_transform(self, scene_transform: Affine) -> Affine:
        """Affine transform of the core's pixel grid."""
        return scene_transform @ Affine.translation(self.core.col_off, self.core.row_off)


@dataclass(frozen=True)
class TileGrid:
    """A scene of ``width`` x ``height`` pixels cut into cores of ``tile_size`` (edge cores are smaller)."""

    width: int
    height: int
    tile_size: int
    halo: int

    def __post_init__(self) -> None:
        if min(self.width, self.height, self.tile_size) < 1 or self.halo < 0:
            raise ValueError(f"invalid tile grid {self}")

    @cached_property
    def shape(self) -> tuple[int, int]:
        """Number of tile rows and columns."""
        return -(-self.height // self.tile_size), -(-self.width // self.tile_size)

    @property
    def read_size(self) -> int:
        """Side of every read window in pixels."""
        return self.tile_size + 2 * self.halo

    def __len__(self) -> int:
        rows, cols = self.shape
        return rows * cols

    def __getitem__(self, index: tuple[int, int]) -> Tile:
        row, col = index
        rows, cols = self.shape
        if not (0 <= row < rows and 0 <= col < cols):
            raise IndexError(f"tile {index} outside grid of shape {self.shape}")
        r0, c0 = row * self.tile_size, col * self.tile_size
        core = Window(c0, r0, min(self.tile_size, self.width - c0), min(self.tile_size, self.height - r0))
        read = Window(c0 - self.halo, r0 - self.halo, self.read_size, self.read_size)
        return Tile(row, col, core, read)

    def __iter__(self) -> Iterator[Tile]:
        rows, cols = self.shape
        for row in range(rows):
            for col in range(cols):
                yield self[row, col]

    def neighbours(self, tile: Tile) -> Iterator[tuple[str, Tile]]:
        """The right and bottom neighbours of a tile (each shared edge once), as (side, tile)."""
        rows, cols = self.shape
        if tile.col + 1 < cols:
            yield "right", self[tile.row, tile.col + 1]
        if tile.row + 1 < rows:
            yield "bottom", self[tile.row + 1, tile.col]


def strip_order(tiles: list[Tile], strips: int, cols: int) -> list[Tile]:
    """Tiles row by row, taking turns between ``strips`` strips of columns (so every strip's worker has work)."""

    def key(tile: Tile) -> tuple[int, int, int]:
        strip = tile.col * strips // cols
        return tile.row, tile.col - -(-strip * cols // strips), strip

    return sorted(tiles, key=key)
