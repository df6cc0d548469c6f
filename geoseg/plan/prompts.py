"""SAM prompts from a vector layer: points and boxes in scene pixel space, routed to tiles.

:meth:`PromptTable.load` reads any vector format geopandas/pyogrio reads (GeoPackage, GeoJSON, Shapefile,
GeoParquet), reprojects to the scene CRS and turns Points into point prompts and Polygons into their bounding boxes.
Each feature keeps a stable key (an id-like column if there is one, else its feature id / row index) and its
attributes, made JSON-safe. The table is a small picklable value; :meth:`PromptTable.for_tile` hands each tile the
prompts whose point (or box centre) lies in its read window.

Pixel coordinates are continuous: pixel (row r, col c) spans [c, c + 1) x [r, r + 1), so its centre is
(c + 0.5, r + 0.5) and ``floor`` gives the pixel index.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from geoseg.errors import InputError
from geoseg.inputs.tiles import Tile
from geoseg.models.base import Prompts

KEY_COLUMNS = ("id", "fid", "key", "uid", "uuid", "objectid", "gid")
"""Column names (case-insensitive, in this order) taken as a feature's key when their values are unique."""


@dataclass(frozen=True)
class _Sorted:
    """Point prompts sorted by x, for O(log n) routing of a tile's column range."""

    xy: np.ndarray
    """(K, 2) points in scene pixel coordinates, sorted by x."""
    order: np.ndarray
    """Index into the unsorted prompts of each sorted anchor."""

    @classmethod
    def of(cls, xy: np.ndarray) -> _Sorted:
        order = np.argsort(xy[:, 0], kind="stable")
        return cls(xy[order], order)

    def inside(self, col0: float, row0: float, width: float, height: float) -> np.ndarray:
        """Unsorted indices (ascending) of the anchors in [col0, col0 + width) x [row0, row0 + height)."""
        lo, hi = np.searchsorted(self.xy[:, 0], [col0, col0 + width], side="left")
        ys = self.xy[lo:hi, 1]
        hits = self.order[lo:hi][(ys >= row0) & (ys < row0 + height)]
        return np.sort(hits)


@dataclass(frozen=True)
class PromptTable:
    """All prompts of a job in scene pixel coordinates (x = column, y = row)."""

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    """(K, 2) point prompts."""
    point_keys: tuple[str, ...] = ()
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    """(M, 4) box prompts x0, y0, x1, y1 (x0 <= x1, y0 <= y1)."""
    box_keys: tuple[str, ...] = ()
    attrs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Key -> JSON-safe attributes of the feature."""
    _point_index: _Sorted = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        points = np.asarray(self.points, float).reshape(-1, 2)
        boxes = np.asarray(self.boxes, float).reshape(-1, 4)
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "_point_index", _Sorted.of(points))

    def __len__(self) -> int:
        return len(self.points) + len(self.boxes)

    def boxes_over_core(self, tile: Tile) -> np.ndarray:
        """Indices of the box prompts that overlap a tile's core (the tiles a box is sent to)."""
        c0, r0 = float(tile.core.col_off), float(tile.core.row_off)
        return _overlapping(self.boxes, c0, r0, c0 + float(tile.core.width), r0 + float(tile.core.height))

    @classmethod
    def load(cls, path: str, layer: str | None, scene_crs_wkt: str, scene_transform: Affine) -> PromptTable:
        """Read a vector file of points and/or polygons as prompts on the scene's pixel grid.

        Raises:
            InputError: unreadable file, no CRS, or no point / polygon geometry.
        """
        frame = _read(path, layer)
        if frame.crs is None:
            raise InputError(f"prompts {path} have no CRS: assign one (e.g. ogr2ogr -a_srs EPSG:4326) and retry")
        try:
            frame = frame.to_crs(scene_crs_wkt)
        except Exception as err:
            raise InputError(f"cannot reproject prompts {path} from {frame.crs} to the scene CRS: {err}") from None
        return _from_frame(frame, path, ~scene_transform)

    def for_tile(self, tile: Tile) -> Prompts:
        """A tile's prompts in read-window pixel coordinates.

        Points go to every tile whose read window holds them. Boxes go to every tile whose *core* they overlap,
        clipped to its read window: each tile segments its part of a large box, and the parts (one key) merge.
        """
        col0, row0 = float(tile.read.col_off), float(tile.read.row_off)
        width, height = float(tile.read.width), float(tile.read.height)
        pts = self._point_index.inside(col0, row0, width, height)
        bxs = self.boxes_over_core(tile)
        point_keys = tuple(self.point_keys[i] for i in pts)
        box_keys = tuple(self.box_keys[i] for i in bxs)
        clipped = np.clip(self.boxes[bxs] - [col0, row0, col0, row0], 0, [width, height, width, height])
        return Prompts(
            points=self.points[pts] - [col0, row0] if len(pts) else np.zeros((0, 2)),
            point_keys=point_keys,
            boxes=clipped if len(bxs) else np.zeros((0, 4)),
            box_keys=box_keys,
            attrs={k: self.attrs[k] for k in (*point_keys, *box_keys) if k in self.attrs},
        )


def _overlapping(boxes: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Indices of boxes with a positive-area overlap with [x0, x1) x [y0, y1)."""
    return np.flatnonzero((boxes[:, 0] < x1) & (boxes[:, 2] > x0) & (boxes[:, 1] < y1) & (boxes[:, 3] > y0))


def _read(path: str, layer: str | None) -> Any:
    """Read a vector file into a GeoDataFrame whose index is the feature id where the format has one."""
    import geopandas as gpd

    suffix = Path(path).suffix.lower()
    try:
        if suffix in (".parquet", ".geoparquet"):
            return gpd.read_parquet(path)
        return gpd.read_file(path, layer=layer, engine="pyogrio", fid_as_index=True)
    except Exception as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        where = f" (layer {layer!r})" if layer else ""
        raise InputError(f"cannot read prompts {path}{where}: {message}; fix `prompts:` / `prompts_layer:`") from None


def _keys(frame: Any) -> list[str]:
    """A stable key per feature: an id-like column with unique values, else the index (feature id / row)."""
    columns = {str(c).lower(): c for c in frame.columns if c != frame.geometry.name}
    for name in KEY_COLUMNS:
        column = columns.get(name)
        if column is not None:
            values = frame[column]
            if values.notna().all() and values.is_unique:
                return [_key_text(v) for v in values]
    return [_key_text(v) for v in frame.index]


def _key_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value.item() if isinstance(value, np.generic) else value)


def _json_safe(value: Any) -> Any:
    """Plain Python value for a feature attribute: numbers, strings, bools, None, ISO dates."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if hasattr(value, "isoformat"):  # pandas Timestamp
        return None if str(value) == "NaT" else value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple | np.ndarray):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return None if _is_missing(value) else str(value)


def _is_missing(value: Any) -> bool:
    try:
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _attributes(frame: Any) -> list[dict[str, Any]]:
    columns = [c for c in frame.columns if c != frame.geometry.name]
    rows = frame[columns].itertuples(index=False, name=None)
    return [{str(c): _json_safe(v) for c, v in zip(columns, row, strict=True)} for row in rows]


def _to_pixels(inverse: Affine, xs: Iterable[float], ys: Iterable[float]) -> np.ndarray:
    xs, ys = np.asarray(list(xs), float), np.asarray(list(ys), float)
    a, b, c, d, e, f = inverse.a, inverse.b, inverse.c, inverse.d, inverse.e, inverse.f
    return np.stack([a * xs + b * ys + c, d * xs + e * ys + f], axis=-1)


def _box_pixels(inverse: Affine, bounds: tuple[float, float, float, float]) -> list[float]:
    """Pixel bounding box of a map bounding box (all four corners, so any axis orientation works)."""
    x0, y0, x1, y1 = bounds
    corners = _to_pixels(inverse, [x0, x1, x1, x0], [y0, y0, y1, y1])
    return [corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(), corners[:, 1].max()]


def _from_frame(frame: Any, path: str, inverse: Affine) -> PromptTable:
    """Points (and multipoint parts) -> point prompts; (multi)polygons -> bounding-box prompts."""
    keys, attrs = _keys(frame), _attributes(frame)
    points: list[tuple[float, float]] = []
    point_keys: list[str] = []
    boxes: list[list[float]] = []
    box_keys: list[str] = []
    table_attrs: dict[str, dict[str, Any]] = {}
    for key, row_attrs, geom in zip(keys, attrs, frame.geometry, strict=True):
        if geom is None or geom.is_empty:
            continue
        kind = geom.geom_type
        if kind in ("Point", "MultiPoint"):
            parts = [geom] if kind == "Point" else list(geom.geoms)
            for i, part in enumerate(parts):
                part_key = key if len(parts) == 1 else f"{key}.{i}"
                points.append((part.x, part.y))
                point_keys.append(part_key)
                table_attrs[part_key] = row_attrs
        elif kind in ("Polygon", "MultiPolygon"):
            boxes.append(_box_pixels(inverse, geom.bounds))
            box_keys.append(key)
            table_attrs[key] = row_attrs
    if not points and not boxes:
        raise InputError(f"prompts {path} hold no point or polygon geometries: give points and/or polygons")
    pixel_points = _to_pixels(inverse, *zip(*points, strict=True)) if points else np.zeros((0, 2))
    return PromptTable(
        points=pixel_points,
        point_keys=tuple(point_keys),
        boxes=np.asarray(boxes, float).reshape(-1, 4),
        box_keys=tuple(box_keys),
        attrs=table_attrs,
    )
