"""The passes of a run over its tiles, on Ray: the model pass, then a blend pass per blended layer, then a refine
pass per prompted model.

Tiles stream through each pass with a bounded number in flight (:func:`geoseg.run.loop.stream_tiles`):

    read task (CPU)  ->  model actor (a batch of tiles; models loaded once)  ->  finish task (CPU)

A job of only cheap CPU models (``cheap`` in :mod:`geoseg.models.table`) runs each tile start to finish in one of
the tile workers instead (one per CPU, see :class:`geoseg.run.tilework.TileWorker`): no pixels through the object
store. Each finished tile lands in the work dir at once (the basis for ``--resume``) and sends back only its
fragments and edge strips, which the driver stitches as neighbours finish. Blended layers get a second pass over
the saved class probabilities. Every pass shares one :class:`~geoseg.run.state.RunState`.
"""

from __future__ import annotations

import logging
from typing import Any

from geoseg.inputs.tiles import Tile, strip_order
from geoseg.models import ModelInfo
from geoseg.models.table import all_cheap
from geoseg.plan.job import JobPlan
from geoseg.plan.prompts import PromptTable
from geoseg.run.actors import ActorPass, device_of, remote_blend, remote_finish, start_actors, start_tile_workers
from geoseg.run.loop import RetryPolicy, TilePass, stream_tiles
from geoseg.run.progress import TileProgress
from geoseg.run.refine import RefinePass, refine_todo, source_prompts
from geoseg.run.state import RunState
from geoseg.run.tilework import TileRecord
from geoseg.run.workdir import TileStatus
from geoseg.stitch.stitcher import LayerTile

log = logging.getLogger(__name__)


def run_passes(state: RunState, todo: list[Tile]) -> None:
    """Every pass of a run, in order (inside a Ray session): models on ``todo``, blends, refines."""
    plan, timings = state.plan, state.timings
    if todo:
        state.device = model_pass(state, todo)
    for info in plan.models:
        if info.merge != "core":
            with timings.stage("blend"):
                blend_pass(state, info)
    for info in plan.models:
        if info.prompts_from:
            with timings.stage("refine"):
                refine_pass(state, info)


class ModelPass(ActorPass):
    """The first pass: read tasks -> the least busy model actor (one call per batch) -> a finish task per tile."""

    owns_status = True

    def __init__(self, state: RunState, actors: list[Any]) -> None:
        super().__init__(state.status, state.plan, actors)
        self.state, self.finish_task = state, remote_finish()
        self.prompts = prompt_tables(state.plan)
        self.blended = frozenset(m.name for m in state.plan.models if m.merge != "core")

    def prompts_for(self, tile: Tile) -> dict[str, Any]:
        return {name: table.for_tile(tile) for name, table in self.prompts.items()}

    def finish(self, tile: Tile, out: Any) -> Any:
        plan = self.plan
        return self.finish_task.remote(tile, out, plan.stats, str(plan.outputs.work_dir), self.blended, self.state.job)

    def succeeded(self, tile: Tile, value: TileRecord, attempts: int) -> None:
        if self.status[tile.id].status == "done":  # never stitch a tile twice
            log.warning("tile %s came back twice; the second result is ignored", tile.id)
            return
        with self.state.timings.stage("stitch"):
            for name, layer in value.layers.items():
                self.state.stitchers[name].add(tile, layer)
        self.status[tile.id] = TileStatus("done", attempts, value.seconds)


class FusedPass(ModelPass):
    """The model pass for cheap CPU models: one call per tile to a tile worker, which reads, runs the models and
    finishes it. Each worker owns a strip of tile columns, so neighbouring tiles share the decoded blocks of their
    halos; a tile goes to the least busy worker instead when its owner is behind."""

    def submit(self, batch: list[Tile]) -> list[Any]:
        refs = []
        plan = self.state.plan
        for tile in batch:
            owner = tile.col * len(self.actors) // plan.grid.shape[1]
            slot = owner if self.busy.load[owner] <= min(self.busy.load) + 1 else self.busy.least_busy()
            transform = tile.read_transform(plan.scene.transform)
            ref = self.actors[slot].process.remote(tile, transform, self.prompts_for(tile))
            self.busy.track([ref], slot)
            refs.append(ref)
        return refs


def fused(plan: JobPlan) -> bool:
    """Whether the job's tiles run start to finish in tile workers: cheap models only, no GPU asked for."""
    return all_cheap(list(plan.spec.models)) and plan.spec.compute.gpus_per_actor == 0


def model_pass(state: RunState, todo: list[Tile]) -> str:
    """Run the models on the tiles still to do; returns the actors' device."""
    plan, timings = state.plan, state.timings
    compute, is_fused = plan.spec.compute, fused(plan)
    with timings.stage("actors_start"):
        actors = start_tile_workers(plan, state.job) if is_fused else start_actors(plan, first_pass_models(plan))
    if is_fused:
        work: ModelPass = FusedPass(state, actors)
        todo = strip_order(todo, len(actors), plan.grid.shape[1])
        limit, batch_size = compute.max_in_flight or 2 * len(actors), 1
    else:
        work = ModelPass(state, actors)
        limit, batch_size = compute.in_flight, compute.batch_size
    with TileProgress(len(todo), enabled=state.progress) as bar, timings.stage("tiles"):
        stream_tiles(todo, work, state.status, limit=limit, batch_size=batch_size, retry=retry_policy(plan),
                     progress=bar)  # fmt: skip
    return device_of(actors)


class BlendPass(TilePass):
    """The second pass of a blended layer: each tile blends its neighbours' saved scores, keeps its core."""

    def __init__(self, state: RunState, info: ModelInfo) -> None:
        super().__init__(state.status)
        self.blend = remote_blend()
        self.label, self.stitcher = f"blend {info.name}", state.stitchers[info.name]
        plan = state.plan
        values = tuple(c.value for c in info.classes)
        self.args = (plan.grid, info.name, info.merge, values, str(plan.outputs.work_dir))

    def submit(self, batch: list[Tile]) -> list[Any]:
        return [self.blend.remote(tile, *self.args) for tile in batch]

    def succeeded(self, tile: Tile, value: LayerTile, attempts: int) -> None:
        self.stitcher.add(tile, value)


def blend_pass(state: RunState, info: ModelInfo) -> None:
    """Blend a layer's tiles that finished the model pass and are not stitched yet (resumed ones may be)."""
    plan, status, stitcher = state.plan, state.status, state.stitchers[info.name]
    todo = [t for t in plan.tiles if status[t.id].status in ("done", "resumed") and t.id not in stitcher]
    work = BlendPass(state, info)
    with TileProgress(len(todo), enabled=state.progress, label=f"blend {info.name}") as bar:
        stream_tiles(todo, work, status, limit=plan.spec.compute.in_flight, batch_size=1, retry=retry_policy(plan),
                     progress=bar)  # fmt: skip


def first_pass_models(plan: JobPlan) -> set[str]:
    """The models of the first pass: all but those prompted by another model's objects."""
    return {m.name for m in plan.models if not m.prompts_from}


def refine_pass(state: RunState, info: ModelInfo) -> None:
    """The second pass of a model prompted by another one's objects (:mod:`geoseg.run.refine`)."""
    assert info.prompts_from is not None
    plan = state.plan
    table = source_prompts(plan, info, state.stitchers[info.prompts_from])
    todo = refine_todo(plan, table, state.stitchers[info.name], state.status)
    if not todo:
        return
    work = RefinePass(state, info, table, start_actors(plan, {info.name}))
    compute = plan.spec.compute
    with TileProgress(len(todo), enabled=state.progress, label=f"refine {info.name}") as bar:
        stream_tiles(todo, work, state.status, limit=compute.in_flight, batch_size=compute.batch_size,
                     retry=retry_policy(plan), progress=bar)  # fmt: skip


def retry_policy(plan: JobPlan) -> RetryPolicy:
    """The job's retry policy (``compute.max_retries``, ``compute.max_failed_tiles``)."""
    compute = plan.spec.compute
    return RetryPolicy(compute.max_retries, compute.max_failed_tiles, compute.tile_timeout_s)


def prompt_tables(plan: JobPlan) -> dict[str, PromptTable]:
    """Model name -> its prompts from a vector layer, for the prompted models that have one."""
    return {
        info.name: PromptTable.load(info.prompts, info.prompts_layer, plan.scene.crs_wkt, plan.scene.transform)
        for info in plan.models
        if info.prompts
    }
