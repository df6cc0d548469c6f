"""Stitching tiles into whole objects: what a tile owns, and how fragments across tile edges become one object.

Rules (see README "How stitching works"):

1. Every model output becomes a *label raster over the read window*: instance models give one directly (overlaps
   already resolved, higher score wins); a semantic class raster is labelled into 4-connected regions of one class.
2. A tile keeps only its core: each core pixel belongs to at most one local label, so fragments never overlap and
   every pixel of an object lands in exactly one fragment. An object seen only in a tile's halo is owned by the
   neighbour whose core holds it.
3. Fragments merge across a shared core edge when the two tiles *agree* there: tile A's label and tile B's label on
   the same pixels, on the two pixel lines either side of the edge (each tile sees one line in its core, the other
   in its halo). For connected regions any agreement merges (exact: the halo view equals the neighbour's core);
   instance models ask for a share of the edge (``merge_min_agreement``). Fragments sharing a ``key`` (one prompt)
   always merge.
4. Union-find over (tile, label) pairs gives objects; each object's fragments are dissolved in integer scene pixel
   coordinates (exact shared edges), and its statistics summed. Ids are assigned in reading order of the objects'
   top-left corners, so they do not depend on the tile size.
5. An object is *final* once every tile it touches has finished and every edge it crosses was matched with its
   finished neighbour (:mod:`geoseg.stitch.mergesets`); the stitcher hands it on then and forgets its fragments, so the
   driver holds only the objects along the front of unfinished tiles, not every object of the layer.

Everything here is plain numpy/shapely; the cost of merging is O(edge pixels), not O(scene).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from skimage import measure

from geoseg.inputs.tiles import Tile, TileGrid
from geoseg.models.base import InstanceInfo, ModelOutput, SemanticOutput
from geoseg.stitch.fieldstats import StatsSource, index_summary, label_sums
from geoseg.stitch.mergesets import MergeSets

_OPPOSITE = {"right": "left", "bottom": "top", "left": "right", "top": "bottom"}


@dataclass
class EdgeStrips:
    """A tile's local labels on the two pixel lines either side of each core edge."""

    inside: dict[str, np.ndarray]
    """Side -> labels on the core's outermost line."""
    outside: dict[str, np.ndarray]
    """Side -> labels on the line just outside the core (in the halo)."""


@dataclass
class Fragment:
    """The part of one local label that lies in a tile's core, with summable statistics."""

    label: int
    geometry: bytes
    """WKB polygon(s) in integer scene pixel coordinates."""
    pixels: int
    score_sum: float
    """Score times pixels (merged score = pixel-weighted mean)."""
    cls: int = 0
    """Class value for regions of a semantic model; 0 for instances."""
    key: str | None = None
    stability: float | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    class_counts: np.ndarray | None = None
    """Pixels per health class (index = class value) inside the fragment."""
    index_sums: dict[str, float] = field(default_factory=dict)
    index_counts: dict[str, int] = field(default_factory=dict)
    index_hists: dict[str, np.ndarray] = field(default_factory=dict)
    masked_pixels: int = 0
    """Pixels of the fragment the crop-health model could not see (clouds, nodata)."""
    edge_sides: int = 0
    """Pixel sides of the fragment's outline (see :mod:`geoseg.stitch.fieldstats`)."""
    edge_sides_masked: int = 0
    """Of those, the sides facing a masked pixel."""


@dataclass
class LayerTile:
    """One model's result for one tile: its fragments and edge strips."""

    fragments: list[Fragment]
    strips: EdgeStrips


# --------------------------------------------------------------------------------------------- per tile
def region_labels(classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label 4-connected regions of equal class (0 = nodata stays 0); returns (labels, class of each label)."""
    labels = measure.label(classes, background=0, connectivity=1).astype(np.int32, copy=False)  # one pass
    label_class = np.zeros(int(labels.max()) + 1, np.uint8)
    label_class[labels.ravel()] = classes.ravel()
    return labels, label_class


def edge_strips(labels: np.ndarray, tile: Tile) -> EdgeStrips:
    """Cut the lines either side of each core edge out of a label raster over the read window (halo >= 1)."""
    rows, cols = tile.core_in_read
    r0, r1, c0, c1 = rows.start, rows.stop, cols.start, cols.stop
    inside = {
        "top": labels[r0, c0:c1],
        "bottom": labels[r1 - 1, c0:c1],
        "left": labels[r0:r1, c0],
        "right": labels[r0:r1, c1 - 1],
    }
    outside = {
        "top": labels[r0 - 1, c0:c1],
        "bottom": labels[r1, c0:c1],
        "left": labels[r0:r1, c0 - 1],
        "right": labels[r0:r1, c1],
    }
    return EdgeStrips({k: v.copy() for k, v in inside.items()}, {k: v.copy() for k, v in outside.items()})


def polygons_by_label(core_labels: np.ndarray, origin: tuple[int, int]) -> dict[int, shapely.Geometry]:
    """Vectorize a core label raster in scene pixel coordinates (``origin`` = core's (col_off, row_off))."""
    parts: dict[int, list[shapely.Geometry]] = defaultdict(list)
    transform = Affine.translation(*origin)
    for geom, value in rasterio.features.shapes(core_labels, mask=core_labels > 0, connectivity=4, transform=transform):
        parts[int(value)].append(shapely.geometry.shape(geom))
    return {label: _combine(polys) for label, polys in parts.items()}


def _combine(polys: list[shapely.Geometry]) -> shapely.Geometry:
    if len(polys) == 1:
        return polys[0]
    multi = shapely.MultiPolygon(polys)
    return multi if multi.is_valid else shapely.union_all(polys)


def tile_layer(output: ModelOutput, tile: Tile, stats: StatsSource | None = None) -> tuple[LayerTile, np.ndarray]:
    """Turn one model output for one tile into its owned fragments, edge strips and core raster.

    Returns the :class:`LayerTile` and the core raster to write (class values for semantic models, local labels
    for instance models).
    """
    if isinstance(output, SemanticOutput):
        labels, label_class = region_labels(output.classes)
        infos: dict[int, InstanceInfo] = {}
        core_raster = output.classes[tile.core_in_read]
    else:
        labels, label_class = output.labels, None
        infos = {info.label: info for info in output.instances}
        core_raster = output.labels[tile.core_in_read]
    core_labels = np.ascontiguousarray(labels[tile.core_in_read], dtype=np.int32)
    polygons = polygons_by_label(core_labels, (int(tile.core.col_off), int(tile.core.row_off)))
    sums = label_sums(labels, stats, tile)
    fragments = []
    for label, geom in polygons.items():
        info = infos.get(label)
        pixels = int(sums.pixels[label])
        fragments.append(
            Fragment(
                label=label,
                geometry=shapely.to_wkb(geom),
                pixels=pixels,
                score_sum=(info.score if info else 1.0) * pixels,
                cls=int(label_class[label]) if label_class is not None else 0,
                key=info.key if info else None,
                stability=info.stability if info else None,
                attrs=dict(info.attrs) if info else {},
                class_counts=sums.classes[label] if sums.classes is not None else None,
                index_sums={name: float(v[label]) for name, v in sums.index_sums.items()},
                index_counts={name: int(v[label]) for name, v in sums.index_counts.items()},
                index_hists={name: v[label] for name, v in sums.index_hists.items()},
                masked_pixels=int(sums.masked[label]) if sums.masked is not None else 0,
                edge_sides=int(sums.edge_sides[label]) if sums.edge_sides is not None else 0,
                edge_sides_masked=int(sums.edge_masked[label]) if sums.edge_masked is not None else 0,
            )
        )
    return LayerTile(fragments, edge_strips(labels, tile)), core_raster


# --------------------------------------------------------------------------------------------- across tiles
def edge_matches(a: EdgeStrips, b: EdgeStrips, side: str, min_agreement: float = 0.0) -> list[tuple[int, int]]:
    """Pairs (label in A, label in B) that agree across the core edge on ``side`` of A (B is that neighbour).

    Both tiles' labels are compared on the same pixels: the line inside A's core (which B sees in its halo) and
    the line inside B's core (which A sees in its halo).
    """
    opposite = _OPPOSITE[side]
    la = np.concatenate([a.inside[side], a.outside[side]])
    lb = np.concatenate([b.outside[opposite], b.inside[opposite]])
    both = (la > 0) & (lb > 0)
    if not both.any():
        return []
    pairs, votes = np.unique(np.stack([la[both], lb[both]]), axis=1, return_counts=True)
    if min_agreement <= 0:
        return [(int(x), int(y)) for x, y in pairs.T]
    ids_a, n_a = np.unique(la[la > 0], return_counts=True)
    ids_b, n_b = np.unique(lb[lb > 0], return_counts=True)
    size_a, size_b = dict(zip(ids_a, n_a, strict=True)), dict(zip(ids_b, n_b, strict=True))
    return [
        (int(x), int(y))
        for (x, y), v in zip(pairs.T, votes, strict=True)
        if v >= min_agreement * min(size_a[x], size_b[y])
    ]


@dataclass
class StitchedObject:
    """One object after stitching, in scene pixel coordinates."""

    id: int
    geometry: shapely.Geometry
    pixels: int
    score: float
    cls: int
    key: str | None
    stability: float | None
    attrs: dict[str, Any]
    class_counts: np.ndarray | None
    index_means: dict[str, float]
    index_medians: dict[str, float]
    fragments: list[tuple[str, int]]
    """(tile id, local label) of each fragment, for the id raster."""
    index_p10: dict[str, float] = field(default_factory=dict)
    masked_pixels: int = 0
    edge_sides: int = 0
    edge_sides_masked: int = 0

    def sort_key(self) -> tuple[float, float, int, int, str, int]:
        """Reading order of the top-left corner (ids follow it); ties broken by the first fragment."""
        minx, miny = self.geometry.bounds[:2]
        return (miny, minx, self.cls, self.pixels, *min(self.fragments))


@dataclass
class _OpenTile:
    """A finished tile with unfinished neighbours: what later edge matches need."""

    strips: EdgeStrips
    keyed: set[int]
    open_labels: dict[str, np.ndarray]
    """Side -> labels on that side's two lines, for each side whose neighbour has not finished."""


class ObjectSink(Protocol):
    """Where a stitcher hands each final object (:class:`geoseg.stitch.spool.ObjectSpool` in a run)."""

    def put(self, obj: StitchedObject) -> None: ...


class _KeptObjects:
    """The default sink: objects kept in memory."""

    def __init__(self) -> None:
        self.objects: list[StitchedObject] = []

    def put(self, obj: StitchedObject) -> None:
        self.objects.append(obj)


class LayerStitcher:
    """Collects one layer's tiles as they finish, merges fragments across shared core edges and hands each object
    to ``sink`` as soon as it is final: every tile it touches finished and every edge it crosses matched. What it
    holds is the open objects along the front of unfinished tiles, not every object of the layer.

    Without a sink, final objects are kept and :meth:`objects` returns them with their ids (tests, small jobs).
    """

    def __init__(self, grid: TileGrid, min_agreement: float = 0.0, sink: ObjectSink | None = None) -> None:
        self.grid = grid
        self.min_agreement = min_agreement
        self._kept = _KeptObjects()
        self.sink: ObjectSink = sink or self._kept
        self._done: set[str] = set()
        self._open: dict[str, _OpenTile] = {}
        self._sets: MergeSets[tuple[str, Fragment]] = MergeSets()

    def __contains__(self, tile_id: str) -> bool:
        """Whether the tile was added."""
        return tile_id in self._done

    @property
    def held_fragments(self) -> int:
        """Fragments of objects that are not final yet: what the stitcher holds."""
        return self._sets.held

    def add(self, tile: Tile, layer: LayerTile) -> None:
        """Add a finished tile; merges it with every finished neighbour (edge work only), emits final objects."""
        tile_id = tile.id
        self._done.add(tile_id)
        keyed = {f.label for f in layer.fragments if f.key is not None}
        touched: list[Any] = []
        for f in layer.fragments:
            self._sets.add_item((tile_id, f.label), (tile_id, f))
            touched.append((tile_id, f.label))
            if f.key is not None:
                self._sets.pin(("key", f.key))
                self._sets.union((tile_id, f.label), ("key", f.key))
        open_labels = {}
        for side, (dr, dc) in (("right", (0, 1)), ("bottom", (1, 0)), ("left", (0, -1)), ("top", (-1, 0))):
            row, col = tile.row + dr, tile.col + dc
            if not (0 <= row < self.grid.shape[0] and 0 <= col < self.grid.shape[1]):
                continue
            neighbour = self.grid[row, col]
            if neighbour.id not in self._done:
                open_labels[side] = self._open_side(tile_id, layer.strips, side)
                continue
            other = self._open[neighbour.id]
            for la, lb in edge_matches(layer.strips, other.strips, side, self.min_agreement):
                if la not in keyed and lb not in other.keyed:  # prompted objects merge by their key only
                    self._sets.union((tile_id, la), (neighbour.id, lb))
            touched += self._close_side(neighbour, _OPPOSITE[side])
        if open_labels:
            self._open[tile.id] = _OpenTile(layer.strips, keyed, open_labels)
        for root in self._sets.final_roots(touched):
            self._emit(root)

    def _open_side(self, tile_id: str, strips: EdgeStrips, side: str) -> np.ndarray:
        """Labels on a side whose neighbour has not finished hold their sets open."""
        labels = np.unique(np.concatenate([strips.inside[side], strips.outside[side]]))
        labels = labels[labels > 0]
        for label in labels.tolist():
            self._sets.refer((tile_id, label), 1)
        return labels

    def _close_side(self, tile: Tile, side: str) -> list[tuple[str, int]]:
        """A finished tile's side whose neighbour just finished: its labels no longer hold their sets open."""
        entry = self._open[tile.id]
        nodes = [(tile.id, label) for label in entry.open_labels.pop(side).tolist()]
        for node in nodes:
            self._sets.refer(node, -1)
        if not entry.open_labels:
            del self._open[tile.id]
        return nodes

    def _emit(self, root: Any) -> None:
        members = self._sets.pop(root)
        if members:  # a set of halo-only labels has no fragment
            self.sink.put(_merge(members))

    def close(self) -> None:
        """The layer is complete (or what is missing failed): every object still held is final."""
        for root in self._sets.roots():
            self._emit(root)
        self._open.clear()

    def objects(self) -> list[StitchedObject]:
        """Without a sink: all objects, ids in reading order of their top-left corners."""
        self.close()
        objects = sorted(self._kept.objects, key=StitchedObject.sort_key)
        for i, obj in enumerate(objects, start=1):
            obj.id = i
        return objects


def _merge(members: list[tuple[str, Fragment]]) -> StitchedObject:
    members = sorted(members, key=lambda m: (m[0], m[1].label))  # independent of the order tiles finished in
    frags = [f for _, f in members]
    geoms = [shapely.from_wkb(f.geometry) for f in frags]
    geometry = geoms[0] if len(geoms) == 1 else shapely.union_all(geoms)
    pixels = sum(f.pixels for f in frags)
    stabilities = [f.stability * f.pixels for f in frags if f.stability is not None]
    counts = [f.class_counts for f in frags if f.class_counts is not None]
    summary = index_summary(frags)
    return StitchedObject(
        id=0,
        geometry=geometry,
        pixels=pixels,
        score=sum(f.score_sum for f in frags) / max(pixels, 1),
        cls=frags[0].cls,
        key=frags[0].key,
        stability=sum(stabilities) / max(pixels, 1) if stabilities else None,
        attrs=frags[0].attrs,
        class_counts=np.sum(counts, axis=0) if counts else None,
        index_means=summary.means,
        index_medians=summary.medians,
        fragments=[(tile_id, f.label) for tile_id, f in members],
        index_p10=summary.p10,
        masked_pixels=sum(f.masked_pixels for f in frags),
        edge_sides=sum(f.edge_sides for f in frags),
        edge_sides_masked=sum(f.edge_sides_masked for f in frags),
    )
