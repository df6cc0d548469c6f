"""Final objects of one layer on disk, so the driver's memory does not grow with their number.

The stitcher hands each object to :class:`ObjectSpool` as soon as it is final (:mod:`geoseg.stitch.stitcher`); the spool
writes them in batches to an SQLite file in the work dir (stdlib ``sqlite3``: geometry as WKB, the rest as JSON, no
pickles). The export reads them back in id order (reading order of their top-left corners, ties by their
first fragment: :meth:`~geoseg.stitch.stitcher.StitchedObject.sort_key`), one batch at a time, sorted by SQLite on
disk. It also keeps, per tile, local label -> global id for the instance mask COG. A spool belongs to one run: it
is recreated at the start of each (``--resume`` refills it from the saved tiles) and removed after the export.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from geoseg.plan.job import JobPlan
from geoseg.stitch.stitcher import LayerStitcher, StitchedObject

FLUSH_ROWS = 2000
"""Objects buffered before they are written."""
CACHE_KIB = 8192
"""SQLite's page cache (its sorter spills to temp files beyond it)."""


class ObjectSpool:
    """One layer's final objects in an SQLite file: :meth:`put` while tiles finish, :meth:`batches` to export."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._remove_files()
        self._db = sqlite3.connect(self.path)
        for pragma in ("journal_mode = OFF", "synchronous = OFF", "temp_store = FILE", f"cache_size = -{CACHE_KIB}"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute(
            "CREATE TABLE objects (miny REAL, minx REAL, cls INTEGER, pixels INTEGER, tile TEXT, label INTEGER, "
            "geom BLOB, doc TEXT)"
        )
        self._db.execute("CREATE TABLE ids (tile TEXT, label INTEGER, id INTEGER)")
        self._pending: list[StitchedObject] = []
        self.count = 0
        self.columns = LayerColumns()
        """The layer's optional columns, over every object put."""
        self.any_multi = False
        """Whether any object is a MultiPolygon (a guess at the layer's geometry type)."""
        self._ids_indexed = False

    def put(self, obj: StitchedObject) -> None:
        """Keep a final object (its id is given when the export reads it back)."""
        self._pending.append(obj)
        self.count += 1
        self.columns.add(obj)
        if len(self._pending) >= FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        """Write the pending objects (geometry work vectorized over them; the sort key as in ``sort_key``)."""
        if not self._pending:
            return
        objects, self._pending = self._pending, []
        geoms = np.array([o.geometry for o in objects], dtype=object)
        self.any_multi |= bool((shapely.get_type_id(geoms) == shapely.GeometryType.MULTIPOLYGON).any())
        bounds = shapely.bounds(geoms)
        rows = [
            (float(b[1]), float(b[0]), o.cls, o.pixels, *min(o.fragments), wkb, _doc(o))
            for o, b, wkb in zip(objects, bounds, shapely.to_wkb(geoms), strict=True)
        ]
        self._db.executemany("INSERT INTO objects VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        self._db.commit()

    def batches(self, size: int) -> Iterator[list[StitchedObject]]:
        """All objects in id order, ids 1, 2, ... given here, ``size`` at a time (at least one batch, maybe empty)."""
        self._flush()
        self._db.execute("CREATE INDEX IF NOT EXISTS objects_order ON objects (miny, minx, cls, pixels, tile, label)")
        cursor = self._db.execute("SELECT geom, doc FROM objects ORDER BY miny, minx, cls, pixels, tile, label")
        next_id = 1
        while True:
            rows = cursor.fetchmany(size)
            geoms = shapely.from_wkb([geom for geom, _ in rows]) if rows else []
            batch = [_object(next_id + i, g, doc) for i, (g, (_, doc)) in enumerate(zip(geoms, rows, strict=True))]
            next_id += len(batch)
            if batch or next_id == 1:
                yield batch
            if len(rows) < size:
                return

    def record_ids(self, objects: list[StitchedObject], kept: set[int]) -> None:
        """Remember the global id of each fragment of the kept objects (for the id raster)."""
        rows = [(tile, label, obj.id) for obj in objects if obj.id in kept for tile, label in obj.fragments]
        self._db.executemany("INSERT INTO ids VALUES (?, ?, ?)", rows)
        self._db.commit()

    def id_lut(self, tile_id: str) -> np.ndarray:
        """A tile's local label -> global id (0: no kept object)."""
        if not self._ids_indexed:
            self._db.execute("CREATE INDEX IF NOT EXISTS ids_tile ON ids (tile)")
            self._ids_indexed = True
        rows = self._db.execute("SELECT label, id FROM ids WHERE tile = ?", (tile_id,)).fetchall()
        if not rows:
            return np.zeros(1, np.uint32)
        pairs = np.array(rows, np.int64)
        lut = np.zeros(int(pairs[:, 0].max()) + 1, np.uint32)
        lut[pairs[:, 0]] = pairs[:, 1]
        return lut

    def close(self) -> None:
        """Close and remove the file."""
        self._db.close()
        self._remove_files()

    def _remove_files(self) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)


def _doc(obj: StitchedObject) -> str:
    return json.dumps(
        {
            "pixels": obj.pixels,
            "score": obj.score,
            "cls": obj.cls,
            "key": obj.key,
            "stability": obj.stability,
            "attrs": obj.attrs,
            "class_counts": None if obj.class_counts is None else obj.class_counts.tolist(),
            "means": obj.index_means,
            "medians": obj.index_medians,
            "p10": obj.index_p10,
            "fragments": obj.fragments,
            "masked": obj.masked_pixels,
            "sides": obj.edge_sides,
            "sides_masked": obj.edge_sides_masked,
        },
        default=_plain,
    )


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot spool a {type(value).__name__}")


def _object(object_id: int, geometry: shapely.Geometry, doc: str) -> StitchedObject:
    d = json.loads(doc)
    return StitchedObject(
        id=object_id,
        geometry=geometry,
        pixels=d["pixels"],
        score=d["score"],
        cls=d["cls"],
        key=d["key"],
        stability=d["stability"],
        attrs=d["attrs"],
        class_counts=None if d["class_counts"] is None else np.asarray(d["class_counts"], np.int64),
        index_means=d["means"],
        index_medians=d["medians"],
        fragments=[(tile, label) for tile, label in d["fragments"]],
        index_p10=d["p10"],
        masked_pixels=d["masked"],
        edge_sides=d["sides"],
        edge_sides_masked=d["sides_masked"],
    )


@dataclass
class LayerColumns:
    """The optional columns of a layer, decided over all its objects (so every batch of a layer has the same)."""

    stability: bool = False
    prompts: bool = False
    prompt_attrs: set[str] = field(default_factory=set)
    indices: set[str] = field(default_factory=set)
    medians: set[str] = field(default_factory=set)
    class_counts: bool = False

    def add(self, obj: StitchedObject) -> None:
        """Account for one object."""
        self.stability |= obj.stability is not None
        if obj.key is not None:
            self.prompts = True
            self.prompt_attrs.update(obj.attrs)
        self.indices.update(obj.index_means)
        self.medians.update(obj.index_medians)
        self.class_counts |= obj.class_counts is not None

    @classmethod
    def of(cls, objects: Sequence[StitchedObject]) -> LayerColumns:
        columns = cls()
        for obj in objects:
            columns.add(obj)
        return columns


def layer_stitchers(plan: JobPlan) -> dict[str, LayerStitcher]:
    """One stitcher per model, spooling each final object to the work dir (:mod:`geoseg.stitch.spool`)."""
    return {
        m.name: LayerStitcher(
            plan.grid, m.merge_min_agreement, ObjectSpool(plan.outputs.work_dir / f"objects.{m.name}")
        )
        for m in plan.models
    }
