"""Ray orchestration: the tile pipeline on Ray (model actors are placed by :mod:`geoseg.run.placement`).

Tiles stream through three stages with a bounded number in flight:

    read task (CPU)  ->  model actor (a batch of tiles; models loaded once)  ->  finish task (CPU)

A job of only cheap CPU models (``cheap`` in :mod:`geoseg.models.table`) runs each tile start to finish in one of
the tile workers instead (one per CPU, see :class:`geoseg.run.tilework.TileWorker`): no pixels through the object store.
Each finished tile lands in the work dir at once (the basis for ``--resume``) and sends back only its fragments
and edge strips, which the driver stitches as neighbours finish. Blended layers get a second pass over the saved
class probabilities. Both passes run in :func:`geoseg.run.loop.run_tiles` under one retry policy; a tile that keeps
failing is reported in the tile index and the job fails loudly after writing what it has.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from geoseg.run import workdir
from geoseg.errors import GeosegError, TileFailedError, error_gist
from geoseg.inputs.reads import strip_cache_mb
from geoseg.export.layers import ExportSummary, check_outputs, export, layer_stitchers
from geoseg.models import ModelInfo
from geoseg.models.table import all_cheap
from geoseg.run.placement import place_actors
from geoseg.plan.job import TILES_LAYER, JobPlan, input_files, plan_job, preflight
from geoseg.run.progress import ProgressMode, TileProgress
from geoseg.run.session import RayStarted, Shutdown, ray_session
from geoseg.run.refine import RefinePass, refine_todo, run_refine_pass, source_prompts
from geoseg.spec.job import JobSpec
from geoseg.stitch.stitcher import LayerStitcher, LayerTile
from geoseg.run.loop import ActorLoad, RetryPolicy, TileStatus, run_tiles
from geoseg.run.tilework import ModelRunner, TileJob, TileRecord, TileWorker, blend_tile, finish_tile, read_tile
from geoseg.inputs.tiles import Tile, strip_order
from geoseg.run.timings import JobTimings

log = logging.getLogger("geoseg")


@dataclass
class RunResult:
    """What a run produced."""

    outputs: ExportSummary
    tiles_done: int
    tiles_resumed: int
    tiles_failed: int
    seconds: float
    device: str


class ModelRunnerActor(ModelRunner):
    """The model actor: :class:`~geoseg.run.tilework.ModelRunner` shaped for Ray's ``num_returns``."""

    def run_batch(self, *args: Any) -> Any:
        """One result per tile; a bare result for a batch of one (``num_returns=1`` wants one object)."""
        results = self.run(*args)
        return results[0] if len(results) == 1 else results


def _remote_functions() -> tuple[Any, Any, Any]:
    import ray

    read = ray.remote(num_cpus=1, max_retries=1)(read_tile)
    finish = ray.remote(num_cpus=1, max_retries=1)(finish_tile)
    # a killed actor always restarts (its models reload); a batch it held is rerun there, then by the driver
    actor = ray.remote(max_restarts=-1, max_task_retries=2)(ModelRunnerActor)
    return read, finish, actor


def _start_actors(plan: JobPlan, actor_cls: Any, names: set[str]) -> list[Any]:
    """Start model actors holding the models ``names``, where ``compute.device`` puts them (:mod:`geoseg.run.placement`)."""
    placement = place_actors(plan.spec.compute)
    specs = [m for m in plan.spec.models if m.name in names]
    infos = [m for m in plan.models if m.name in names]
    args = (specs, infos, plan.scene_info, plan.bands, placement.device)
    actors = [actor_cls.options(**placement.options(i)).remote(*args) for i in range(plan.spec.compute.actors)]
    return _started(actors)


def _start_tile_workers(plan: JobPlan) -> list[Any]:
    """One tile worker per CPU of the cluster (each loads the models once)."""
    import ray

    worker_cls = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=2)(TileWorker)
    blended = frozenset(m.name for m in plan.models if m.merge != "core")
    count = max(1, int(ray.cluster_resources().get("CPU", 1)))
    strip = -(-plan.grid.shape[1] // count) * plan.grid.tile_size
    paths = [path for name in plan.bands for path in plan.scene.band(name).paths]
    cache = strip_cache_mb(paths, plan.grid.read_size, strip + plan.grid.read_size)
    job = TileJob(plan.scene, plan.bands, plan.stats, str(plan.outputs.work_dir), blended, cache)
    args = (list(plan.spec.models), list(plan.models), plan.scene_info, job, "cpu")
    return _started([worker_cls.remote(*args) for _ in range(count)])


def _started(actors: list[Any]) -> list[Any]:
    """The actors, once each has loaded its models."""
    import ray

    try:
        ray.get([actor.device_name.remote() for actor in actors])  # models load once per actor, here
    except ray.exceptions.RayError as err:
        raise GeosegError(f"model actor failed to start: {error_gist(err, 300)}") from None
    return actors


# --------------------------------------------------------------------------------------------- the run
def run_job(
    spec: JobSpec,
    *,
    overwrite: bool = False,
    resume: bool = False,
    address: str | None = None,
    progress: bool | ProgressMode = True,
    started: RayStarted | None = None,
) -> RunResult:
    """Run a job end to end: plan, tiles on Ray, stitch, export (while Ray shuts down).

    ``started``: Ray brought up before the call (:mod:`geoseg.launch`); it is shut down like one started here.

    Raises:
        OutputExistsError: an output exists and ``overwrite`` is false (before any work).
        TileFailedError: tiles failed after their retries (outputs are written; the tile index names them).
    """
    shutdown = Shutdown()
    try:
        return _run(spec, overwrite, resume, address, progress, shutdown, started)
    finally:
        shutdown.join()


def _run(
    spec: JobSpec,
    overwrite: bool,
    resume: bool,
    address: str | None,
    progress: bool | ProgressMode,
    shutdown: Shutdown,
    started: RayStarted | None,
) -> RunResult:
    """:func:`run_job`, Ray's shutdown left running in ``shutdown``."""
    start = time.perf_counter() - (started.seconds if started else 0.0)  # a run's wall includes Ray's start
    timings = JobTimings()
    with timings.stage("plan"):
        plan = plan_job(spec)
        check_outputs(plan, overwrite)
        checkpoints = preflight(plan)
    work_dir = plan.outputs.work_dir
    fresh_work_dir = not work_dir.exists()
    workdir.prepare(work_dir, spec, resume, input_files(plan), checkpoints)
    stitchers = layer_stitchers(plan)
    status: dict[str, TileStatus] = {t.id: TileStatus() for t in plan.tiles}
    todo = _resume(plan, stitchers, status) if resume else list(plan.tiles)
    resumed = len(plan.tiles) - len(todo)
    device = "cpu"
    try:
        with ray_session(address or spec.compute.address, spec, timings, shutdown, started):
            if todo:
                device = _model_pass(plan, todo, stitchers, status, progress, timings)
            for info in plan.models:
                if info.merge != "core":
                    with timings.stage("blend"):
                        _blend_pass(plan, info, stitchers[info.name], status, progress)
            for info in plan.models:
                if info.prompts_from:
                    with timings.stage("refine"):
                        _refine_pass(plan, info, stitchers, status, progress)
    except GeosegError:
        if fresh_work_dir:  # failed before any work (Ray, actors): leave nothing behind
            workdir.discard_if_unused(work_dir)
        raise
    failed = [tid for tid, s in status.items() if s.status == "failed"]
    pipeline = "tile workers" if _fused(plan) else "model actors"
    meta = {"device": device, "pipeline": pipeline, "tiles_failed": len(failed), "tiles_resumed": resumed}
    outputs = export(plan, stitchers, status, meta, overwrite, timings)
    result = RunResult(
        outputs, len(plan.tiles) - len(failed), resumed, len(failed), time.perf_counter() - start, device
    )
    if failed:
        first = status[failed[0]].error
        raise TileFailedError(
            f"{len(failed)} of {len(plan.tiles)} tiles failed (first: {failed[0]}: {first}); outputs were written "
            f"with them empty, see the '{TILES_LAYER}' layer; fix the cause and rerun with --resume"
        )
    return result


def _resume(plan: JobPlan, stitchers: dict[str, LayerStitcher], status: dict[str, TileStatus]) -> list[Tile]:
    """Feed tiles finished by an earlier run to the stitchers; return the tiles still to do."""
    todo = []
    for tile in plan.tiles:
        saved = workdir.load_tile(plan.outputs.work_dir, tile.id)
        if saved is None:
            todo.append(tile)
            continue
        for name, layer in saved.layers.items():
            stitchers[name].add(tile, layer)
        status[tile.id] = TileStatus("resumed", 0, saved.seconds)
    return todo


class _ModelPass:
    """The first pass: read tasks -> the least busy model actor (one call per batch) -> a finish task per tile."""

    def __init__(
        self,
        plan: JobPlan,
        stitchers: dict[str, LayerStitcher],
        status: dict[str, TileStatus],
        actors: list[Any],
        timings: JobTimings,
    ) -> None:
        self.plan, self.stitchers, self.status, self.actors = plan, stitchers, status, actors
        self.timings = timings
        self.read, self.finish, _ = _remote_functions()
        self.prompts = _prompt_tables(plan)
        self.busy = ActorLoad(actors)
        self.blended = frozenset(m.name for m in plan.models if m.merge != "core")

    def submit(self, batch: list[Tile]) -> list[Any]:
        plan, slot = self.plan, self.busy.least_busy()
        reads = [self.read.remote(plan.scene, t, plan.bands) for t in batch]
        transforms = [t.read_transform(plan.scene.transform) for t in batch]
        prompts = [{name: table.for_tile(t) for name, table in self.prompts.items()} for t in batch]
        outs = self.busy.run_batch(slot, batch, transforms, prompts, reads)
        work_dir = str(plan.outputs.work_dir)
        refs = [
            self.finish.remote(t, out, plan.stats, work_dir, self.blended) for t, out in zip(batch, outs, strict=True)
        ]
        self.busy.track(refs, slot)
        return refs

    def settled(self, ref: Any) -> None:
        self.busy.settled(ref)

    def succeeded(self, tile: Tile, value: TileRecord, attempts: int) -> None:
        if self.status[tile.id].status == "done":  # never stitch a tile twice
            log.warning("tile %s came back twice; the second result is ignored", tile.id)
            return
        with self.timings.stage("stitch"):
            for name, layer in value.layers.items():
                self.stitchers[name].add(tile, layer)
        self.status[tile.id] = TileStatus("done", attempts, value.seconds)

    def failed(self, tile: Tile, error: str, attempts: int, retrying: bool) -> None:
        state = self.status[tile.id]
        state.status, state.attempts, state.error = ("retrying" if retrying else "failed"), attempts, error
        if retrying:
            log.warning("tile %s failed (attempt %d), retrying: %s", tile.id, attempts, error)
        else:
            log.error("tile %s failed after %d attempts: %s", tile.id, attempts, error)


class _FusedPass(_ModelPass):
    """The model pass for cheap CPU models: one call per tile to a tile worker, which reads, runs the models and
    finishes it. Each worker owns a strip of tile columns, so neighbouring tiles share the decoded blocks of their
    halos; a tile goes to the least busy worker instead when its owner is behind."""

    def submit(self, batch: list[Tile]) -> list[Any]:
        refs = []
        for tile in batch:
            owner = tile.col * len(self.actors) // self.plan.grid.shape[1]
            slot = owner if self.busy.load[owner] <= min(self.busy.load) + 1 else self.busy.least_busy()
            prompts = {name: table.for_tile(tile) for name, table in self.prompts.items()}
            ref = self.actors[slot].process.remote(tile, tile.read_transform(self.plan.scene.transform), prompts)
            self.busy.track([ref], slot)
            refs.append(ref)
        return refs


def _fused(plan: JobPlan) -> bool:
    """Whether the job's tiles run start to finish in tile workers: cheap models only, no GPU asked for."""
    return all_cheap(list(plan.spec.models)) and plan.spec.compute.gpus_per_actor == 0


def _model_pass(
    plan: JobPlan,
    todo: list[Tile],
    stitchers: dict[str, LayerStitcher],
    status: dict[str, TileStatus],
    show_progress: bool | ProgressMode,
    timings: JobTimings,
) -> str:
    """Run the models on the tiles still to do; returns the actors' device."""
    import ray

    compute, fused = plan.spec.compute, _fused(plan)
    with timings.stage("actors_start"):
        actors = (
            _start_tile_workers(plan)
            if fused
            else _start_actors(plan, _remote_functions()[2], _first_pass_models(plan))
        )
    if fused:
        work: _ModelPass = _FusedPass(plan, stitchers, status, actors, timings)
        todo = strip_order(todo, len(actors), plan.grid.shape[1])
        limit, batch_size = compute.max_in_flight or 2 * len(actors), 1
    else:
        work = _ModelPass(plan, stitchers, status, actors, timings)
        limit, batch_size = compute.in_flight, compute.batch_size
    with TileProgress(len(todo), enabled=show_progress) as bar, timings.stage("tiles"):
        run_tiles(todo, work, status, limit=limit, batch_size=batch_size, retry=_retry(plan), progress=bar)
    return str(ray.get(actors[0].device_name.remote()))


class _BlendPass:
    """The second pass of a blended layer: each tile blends its neighbours' saved scores, keeps its core."""

    def __init__(self, plan: JobPlan, info: ModelInfo, stitcher: LayerStitcher, status: dict[str, TileStatus]) -> None:
        import ray

        self.blend = ray.remote(num_cpus=1, max_retries=1)(blend_tile)
        self.name, self.stitcher, self.status = info.name, stitcher, status
        values = tuple(c.value for c in info.classes)
        self.args = (plan.grid, info.name, info.merge, values, str(plan.outputs.work_dir))

    def submit(self, batch: list[Tile]) -> list[Any]:
        return [self.blend.remote(tile, *self.args) for tile in batch]

    def settled(self, ref: Any) -> None:
        pass

    def succeeded(self, tile: Tile, value: LayerTile, attempts: int) -> None:
        self.stitcher.add(tile, value)

    def failed(self, tile: Tile, error: str, attempts: int, retrying: bool) -> None:
        message = f"blend {self.name}: {error}"
        if retrying:
            log.warning("tile %s failed (blend attempt %d), retrying: %s", tile.id, attempts, message)
            return
        state = self.status[tile.id]
        state.status, state.error = "failed", message
        log.error("tile %s failed: %s", tile.id, message)


def _blend_pass(
    plan: JobPlan,
    info: ModelInfo,
    stitcher: LayerStitcher,
    status: dict[str, TileStatus],
    show_progress: bool | ProgressMode,
) -> None:
    """Blend a layer's tiles that finished the model pass and are not stitched yet (resumed ones may be)."""
    todo = [t for t in plan.tiles if status[t.id].status in ("done", "resumed") and t.id not in stitcher]
    work = _BlendPass(plan, info, stitcher, status)
    with TileProgress(len(todo), enabled=show_progress, label=f"blend {info.name}") as bar:
        run_tiles(todo, work, status, limit=plan.spec.compute.in_flight, batch_size=1, retry=_retry(plan), progress=bar)


def _first_pass_models(plan: JobPlan) -> set[str]:
    """The models of the first pass: all but those prompted by another model's objects."""
    return {m.name for m in plan.models if not m.prompts_from}


def _refine_pass(
    plan: JobPlan,
    info: ModelInfo,
    stitchers: dict[str, LayerStitcher],
    status: dict[str, TileStatus],
    show_progress: bool | ProgressMode,
) -> None:
    """The second pass of a model prompted by another one's objects (:mod:`geoseg.run.refine`)."""
    assert info.prompts_from is not None
    table = source_prompts(plan, info, stitchers[info.prompts_from])
    todo = refine_todo(plan, table, stitchers[info.name], status)
    if not todo:
        return
    _, _, actor_cls = _remote_functions()
    actors = _start_actors(plan, actor_cls, {info.name})
    work = RefinePass(plan, info, table, stitchers[info.name], status, actors)
    run_refine_pass(plan, work, todo, _retry(plan), show_progress)


def _retry(plan: JobPlan) -> RetryPolicy:
    return RetryPolicy(plan.spec.compute.max_retries, plan.spec.compute.max_failed_tiles)


def _prompt_tables(plan: JobPlan) -> dict[str, Any]:
    tables = {}
    for info in plan.models:
        if info.prompts:
            from geoseg.plan.prompts import PromptTable

            tables[info.name] = PromptTable.load(
                info.prompts, info.prompts_layer, plan.scene.crs_wkt, plan.scene.transform
            )
    return tables


__all__ = ["RunResult", "run_job"]
