"""Ray orchestration: the tile pipeline on Ray (model actors are placed by :mod:`geoseg.placement`).

Tiles stream through three stages with a bounded number in flight:

    read task (CPU)  ->  model actor (a batch of tiles; models loaded once)  ->  finish task (CPU)

Each finished tile lands in the work dir at once (the basis for ``--resume``) and sends back only its fragments
and edge strips, which the driver stitches as neighbours finish. A tile that fails is retried; one that keeps
failing is reported in the tile index and the job fails loudly after writing what it has.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from geoseg import workdir
from geoseg.errors import GeosegError, TileFailedError, TooManyFailedTilesError, raise_job_terminated
from geoseg.finalize import TILES_LAYER, TileStatus, check_outputs, export
from geoseg.models import ModelInfo
from geoseg.placement import place_actors
from geoseg.plan import JobPlan, input_files, plan_job, preflight
from geoseg.progress import ProgressMode, TileProgress
from geoseg.spec import JobSpec
from geoseg.stitch import LayerStitcher
from geoseg.tilework import ModelRunner, TileRecord, blend_tile, finish_tile, read_tile
from geoseg.tiling import Tile

log = logging.getLogger("geoseg")


@dataclass
class RunResult:
    """What a run produced."""

    outputs: dict[str, Any]
    tiles_done: int
    tiles_resumed: int
    tiles_failed: int
    seconds: float
    device: str


# --------------------------------------------------------------------------------------------- ray session
@contextmanager
def ray_session(address: str | None, spec: JobSpec) -> Iterator[None]:
    """Connect to a cluster (``address``), reuse a running Ray, or start an embedded one bound to 127.0.0.1."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    if address is None and "ray" not in sys.modules:  # read when ray is first imported
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # embedded Ray binds to 127.0.0.1
    import ray

    if ray.is_initialized():
        yield
        return
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address is None:
        kwargs |= {
            "num_cpus": spec.compute.num_cpus,
            "include_dashboard": False,
            "object_store_memory": spec.compute.object_store_mb * 2**20,
        }
    try:
        # "local" always starts a fresh Ray: a stale `ray start` address file must not be joined
        ray.init(address=address or "local", **kwargs)
    except ConnectionError as err:
        raise GeosegError(f"cannot reach the Ray cluster at {address}: {err}") from None
    previous = _on_sigterm(raise_job_terminated)  # ray.init set its own (sys.exit(15))
    try:
        yield
    finally:
        ray.shutdown()
        _on_sigterm(previous)


def _on_sigterm(handler: Any) -> Any:
    """Install a SIGTERM handler (main thread only); returns the previous one."""
    if threading.current_thread() is not threading.main_thread() or handler is None:
        return None
    return signal.signal(signal.SIGTERM, handler)


def _remote_functions() -> tuple[Any, Any, Any]:
    import ray

    read = ray.remote(num_cpus=1, max_retries=1)(read_tile)
    finish = ray.remote(num_cpus=1, max_retries=1)(finish_tile)
    # a killed actor always restarts (its models reload); a batch it held is rerun there, then by the driver
    actor = ray.remote(max_restarts=-1, max_task_retries=2)(ModelRunner)
    return read, finish, actor


def _start_actors(plan: JobPlan, actor_cls: Any) -> list[Any]:
    """Start the model actors where ``compute.device`` puts them (:mod:`geoseg.placement`)."""
    import ray

    placement = place_actors(plan.spec.compute)
    args = (list(plan.spec.models), list(plan.models), plan.scene_info, plan.bands, placement.device)
    actors = [actor_cls.options(**placement.options(i)).remote(*args) for i in range(plan.spec.compute.actors)]
    try:
        ray.get([actor.device_name.remote() for actor in actors])  # models load once per actor, here
    except ray.exceptions.RayError as err:
        raise GeosegError(f"model actor failed to start: {_short_error(err)}") from None
    return actors


# --------------------------------------------------------------------------------------------- the run
def run_job(
    spec: JobSpec,
    *,
    overwrite: bool = False,
    resume: bool = False,
    address: str | None = None,
    progress: bool | ProgressMode = True,
) -> RunResult:
    """Run a job end to end: plan, tiles on Ray, stitch, export.

    Raises:
        OutputExistsError: an output exists and ``overwrite`` is false (before any work).
        TileFailedError: tiles failed after their retries (outputs are written; the tile index names them).
    """
    start = time.perf_counter()
    plan = plan_job(spec)
    check_outputs(plan, overwrite)
    checkpoints = preflight(plan)
    fresh_work_dir = not plan.work_dir.exists()
    workdir.prepare(plan.work_dir, spec, resume, input_files(plan), checkpoints)
    stitchers = {m.name: LayerStitcher(plan.grid, m.merge_min_agreement) for m in plan.models}
    status: dict[str, TileStatus] = {t.id: TileStatus() for t in plan.tiles}
    todo = _resume(plan, stitchers, status) if resume else list(plan.tiles)
    resumed = len(plan.tiles) - len(todo)
    device = "cpu"
    try:
        with ray_session(address or spec.compute.address, spec):
            if todo:
                device = _stream_tiles(plan, todo, stitchers, status, progress)
            for info in plan.models:
                if info.merge != "core":
                    _blend_pass(plan, info, stitchers[info.name], status, progress)
    except GeosegError:
        if fresh_work_dir:  # failed before any work (Ray, actors): leave nothing behind
            workdir.discard_if_unused(plan.work_dir)
        raise
    failed = [tid for tid, s in status.items() if s.status == "failed"]
    meta = {"device": device, "tiles_failed": len(failed), "tiles_resumed": resumed}
    outputs = export(plan, stitchers, status, meta, overwrite)
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
        saved = workdir.load_tile(plan.work_dir, tile.id)
        if saved is None:
            todo.append(tile)
            continue
        layers, meta = saved
        for name, layer in layers.items():
            stitchers[name].add(tile, layer)
        status[tile.id] = TileStatus("resumed", 0, meta.get("seconds", {}))
    return todo


@dataclass
class _InFlight:
    tile: Tile
    actor: int


class _BatchSubmitter:
    """Submits a batch: read tasks -> the least busy actor (one call) -> a finish task per tile."""

    def __init__(self, plan: JobPlan, actors: list[Any], read: Any, finish: Any, prompts: dict[str, Any]) -> None:
        self.plan, self.actors, self.read, self.finish, self.prompts = plan, actors, read, finish, prompts
        self.load = [0] * len(actors)
        self.stats, self.work_dir = plan.stats, str(plan.work_dir)
        self.blended = frozenset(m.name for m in plan.models if m.merge != "core")

    def __call__(self, batch: list[Tile], status: dict[str, TileStatus]) -> dict[Any, _InFlight]:
        plan, slot = self.plan, self.load.index(min(self.load))
        reads = [self.read.remote(plan.scene, t, plan.bands) for t in batch]
        transforms = [t.read_transform(plan.scene.transform) for t in batch]
        prompts = [{name: table.for_tile(t) for name, table in self.prompts.items()} for t in batch]
        outs = self.actors[slot].run.options(num_returns=len(batch)).remote(batch, transforms, prompts, *reads)
        outs = outs if isinstance(outs, list) else [outs]
        submitted = {}
        for tile, out in zip(batch, outs, strict=True):
            ref = self.finish.remote(tile, out, self.stats, self.work_dir, self.blended)
            submitted[ref] = _InFlight(tile, slot)
            status[tile.id].attempts += 1
        self.load[slot] += len(batch)
        return submitted


def _stream_tiles(
    plan: JobPlan,
    todo: list[Tile],
    stitchers: dict[str, LayerStitcher],
    status: dict[str, TileStatus],
    show_progress: bool | ProgressMode,
) -> str:
    """Push tiles through read -> model -> finish with at most ``max_in_flight`` tiles between stages."""
    import ray

    read, finish, actor_cls = _remote_functions()
    actors = _start_actors(plan, actor_cls)
    compute = plan.spec.compute
    max_in_flight = compute.in_flight
    pending: deque[Tile] = deque(todo)
    in_flight: dict[Any, _InFlight] = {}
    submit = _BatchSubmitter(plan, actors, read, finish, _prompt_tables(plan))
    with TileProgress(len(todo), enabled=show_progress) as bar:
        while pending or in_flight:
            while pending and len(in_flight) < max_in_flight:
                size = min(compute.batch_size, len(pending), max_in_flight - len(in_flight))
                in_flight |= submit([pending.popleft() for _ in range(size)], status)
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                job = in_flight.pop(ref)
                submit.load[job.actor] -= 1
                if _collect(ref, job.tile, stitchers, status, pending, compute.max_retries):
                    _stop_if_over_budget(plan, status, list(in_flight))
                bar.advance(status[job.tile.id].status)
    return ray.get(actors[0].device_name.remote())


def _blend_pass(
    plan: JobPlan,
    info: ModelInfo,
    stitcher: LayerStitcher,
    status: dict[str, TileStatus],
    show_progress: bool | ProgressMode,
) -> None:
    """Second pass for a blended layer: each finished tile blends its neighbours' saved scores, bounded in flight;
    a failing tile is retried like in the model pass."""
    import ray

    blend = ray.remote(num_cpus=1, max_retries=1)(blend_tile)
    values = tuple(c.value for c in info.classes)
    todo = deque(t for t in plan.tiles if status[t.id].status in ("done", "resumed") and t.id not in stitcher.fragments)
    limit, max_retries = plan.spec.compute.in_flight, plan.spec.compute.max_retries
    attempts = dict.fromkeys((t.id for t in todo), 0)
    in_flight: dict[Any, Tile] = {}
    args = (plan.grid, info.name, info.merge, values, str(plan.work_dir))
    with TileProgress(len(todo), enabled=show_progress, label=f"blend {info.name}") as bar:
        while todo or in_flight:
            while todo and len(in_flight) < limit:
                tile = todo.popleft()
                attempts[tile.id] += 1
                in_flight[blend.remote(tile, *args)] = tile
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            tile = in_flight.pop(ready[0])
            try:
                stitcher.add(tile, ray.get(ready[0]))
            except (ray.exceptions.RayError, GeosegError) as err:
                state = status[tile.id]
                error = f"blend {info.name}: {_short_error(err)}"
                if _retry_or_fail(tile, state, error, attempts[tile.id], max_retries):
                    todo.append(tile)
                    continue
                state.status = "failed"
                _stop_if_over_budget(plan, status, list(in_flight))
            bar.advance(status[tile.id].status)


def _retry_or_fail(tile: Tile, state: TileStatus, error: str, attempts: int, max_retries: int) -> bool:
    """The one retry policy of both passes: record the error; True if the tile gets another attempt."""
    state.error = error
    if attempts <= max_retries:
        log.warning("tile %s failed (attempt %d), retrying: %s", tile.id, attempts, error)
        return True
    log.error("tile %s failed after %d attempts: %s", tile.id, attempts, error)
    return False


def _stop_if_over_budget(plan: JobPlan, status: dict[str, TileStatus], in_flight: list[Any]) -> None:
    """Stop the job once more tiles failed than ``compute.max_failed_tiles`` allows (finished tiles are kept)."""
    import ray

    budget = plan.spec.compute.max_failed_tiles
    failed = [tid for tid, s in status.items() if s.status == "failed"]
    if budget is None or len(failed) <= budget:
        return
    for ref in in_flight:
        ray.cancel(ref)
    raise TooManyFailedTilesError(
        f"stopped after {len(failed)} failed tiles (compute.max_failed_tiles={budget}; first: {failed[0]}: "
        f"{status[failed[0]].error}); fix the cause and rerun with --resume to keep the finished tiles"
    )


def _collect(
    ref: Any,
    tile: Tile,
    stitchers: dict[str, LayerStitcher],
    status: dict[str, TileStatus],
    pending: deque[Tile],
    max_retries: int,
) -> bool:
    """Take a tile's result into the stitchers, or retry it; True if the tile failed for good."""
    import ray

    state = status[tile.id]
    try:
        record: TileRecord = ray.get(ref)
    except (ray.exceptions.RayError, GeosegError) as err:
        if _retry_or_fail(tile, state, _short_error(err), state.attempts, max_retries):
            pending.append(tile)
            state.status = "retrying"
            return False
        state.status = "failed"
        return True
    if state.status == "done":  # never stitch a tile twice
        log.warning("tile %s came back twice; the second result is ignored", tile.id)
        return False
    for name, layer in record.layers.items():
        stitchers[name].add(tile, layer)
    state.status, state.seconds, state.error = "done", record.seconds, None
    return False


_ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.+)$")


def _short_error(err: BaseException) -> str:
    """The innermost 'SomeError: message' line of a (remote) error, for logs and the tile index."""
    lines = [m.groups() for m in map(_ERROR_LINE.match, str(err).splitlines()) if m]
    if lines:
        name, message = lines[-1]
        return f"{name}: {message}"[:300]
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]


def _prompt_tables(plan: JobPlan) -> dict[str, Any]:
    tables = {}
    for info in plan.models:
        if info.prompts:
            from geoseg.prompts import PromptTable

            tables[info.name] = PromptTable.load(
                info.prompts, info.prompts_layer, plan.scene.crs_wkt, plan.scene.transform
            )
    return tables


__all__ = ["RunResult", "run_job"]
