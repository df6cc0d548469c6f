"""Models prompted by another model of the same job (``prompts_from``): a second pass after the first.

The source model (a field delineator, say) runs in the first pass with the job's other models and is stitched;
every object it keeps becomes one box prompt — its bounding box in scene pixels, keyed by its id — and the
prompted model (SAM) runs on the tiles those boxes overlap in a pass of its own, on actors that load only it.
Its tiles' layers are added to the tiles the first pass saved, so ``--resume`` finishes an interrupted second pass
without redoing the first. Each refined object carries the id of the object that prompted it (``prompt_id``) and
that object's layer (``prompt_source``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.inputs.tiles import Tile
from geoseg.models import ModelInfo
from geoseg.plan.job import JobPlan
from geoseg.plan.outputs import layer_cleaning
from geoseg.plan.prompts import PromptTable
from geoseg.run import workdir
from geoseg.run.actors import ActorPass
from geoseg.run.state import RunState
from geoseg.run.tilework import ModelResult, TileRecord
from geoseg.run.workdir import TileStatus
from geoseg.stitch.spool import ObjectSpool
from geoseg.stitch.stitcher import LayerStitcher, StitchedObject, tile_layer

log = logging.getLogger(__name__)

BOX_BATCH = 10_000


def source_prompts(plan: JobPlan, info: ModelInfo, source: LayerStitcher) -> PromptTable:
    """One box prompt per object of the finished source layer that the export keeps by area."""
    source_info = next(m for m in plan.models if m.name == info.prompts_from)
    cleaning = layer_cleaning(plan, source_info)
    pixel_area = plan.scene_info.pixel_area_m2
    max_area = cleaning.max_area_m2 if cleaning.max_area_m2 is not None else np.inf
    boxes: list[tuple[float, float, float, float]] = []
    keys: list[str] = []
    for batch in _source_objects(source):
        for obj in batch:
            if cleaning.min_area_m2 <= obj.pixels * pixel_area <= max_area:
                boxes.append(tuple(obj.geometry.bounds))
                keys.append(str(obj.id))
    attrs = {key: {"source": source_info.name} for key in keys}
    return PromptTable(boxes=np.array(boxes, float).reshape(-1, 4), box_keys=tuple(keys), attrs=attrs)


def _source_objects(source: LayerStitcher) -> Iterable[list[StitchedObject]]:
    """The finished source's objects in id order (the ids its layer will have), in batches."""
    source.close()
    if isinstance(source.sink, ObjectSpool):
        return source.sink.batches(BOX_BATCH)
    return [source.objects()]


def finish_refined(tile: Tile, result: ModelResult, work_dir: str) -> TileRecord:
    """Vectorize a tile's refined layers and add them to the tile the first pass saved."""
    layers = {}
    for name, output in result.outputs.items():
        layers[name], core = tile_layer(output, tile)
        workdir.add_layer(Path(work_dir), tile.id, name, layers[name], core)
    return TileRecord(tile, layers, result.seconds)


class RefinePass(ActorPass):
    """Read -> an actor holding only the prompted model (one call per batch) -> add its layer to the saved tile."""

    def __init__(self, state: RunState, info: ModelInfo, table: PromptTable, actors: list[Any]) -> None:
        import ray

        super().__init__(state.status, state.plan, actors)
        self.finish_task = ray.remote(num_cpus=1, max_retries=1)(finish_refined)
        self.info, self.table, self.stitcher, self.label = info, table, state.stitchers[info.name], info.name

    def prompts_for(self, tile: Tile) -> dict[str, Any]:
        return {self.info.name: self.table.for_tile(tile)}

    def finish(self, tile: Tile, out: Any) -> Any:
        return self.finish_task.remote(tile, out, str(self.plan.outputs.work_dir))

    def succeeded(self, tile: Tile, value: TileRecord, attempts: int) -> None:
        self.stitcher.add(tile, value.layers[self.info.name])


def refine_todo(plan: JobPlan, table: PromptTable, stitcher: LayerStitcher, status: dict[str, TileStatus]) -> list:
    """Tiles the first pass finished whose core a prompt box overlaps and that this pass has not added yet."""
    return [
        t
        for t in plan.tiles
        if status[t.id].status in ("done", "resumed") and t.id not in stitcher and len(table.boxes_over_core(t))
    ]
