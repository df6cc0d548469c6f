"""Ray orchestration: the only module that imports ``ray``.

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
import sys
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from geoseg import workdir
from geoseg.errors import GeosegError, TileFailedError
from geoseg.finalize import TILES_LAYER, TileStatus, check_outputs, export
from geoseg.models import ModelInfo
from geoseg.plan import JobPlan, plan_job, preflight
from geoseg.progress import TileProgress
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
    try:
        yield
    finally:
        ray.shutdown()


def _remote_functions() -> tuple[Any, Any, Any]:
    import ray

    read = ray.remote(num_cpus=1, max_retries=1)(read_tile)
    finish = ray.remote(num_cpus=1, max_retries=1)(finish_tile)
    actor = ray.remote(max_restarts=2, max_task_retries=1)(ModelRunner)
    return read, finish, actor


def _start_actors(plan: JobPlan, actor_cls: Any) -> list[Any]:
    """Start the model actors: GPU actors hold their GPU share only; CPU actors hold one CPU each and must leave
    at least one CPU for the read and finish tasks."""
    import ray

    compute = plan.spec.compute
    resources = ray.cluster_resources()
    gpus = compute.gpus_per_actor if resources.get("GPU", 0) >= compute.gpus_per_actor > 0 else 0
    if compute.gpus_per_actor > 0 and not gpus:
        log.warning(
            "asked for %s GPU(s) per actor, the cluster has %s: CPU actors",
            compute.gpus_per_actor,
            resources.get("GPU", 0),
        )
    cpus = resources.get("CPU", 0)
    if not gpus and compute.actors >= cpus:
        raise GeosegError(
            f"compute.actors={compute.actors} CPU model actors leave no CPU for reading tiles on this "
            f"{cpus:g}-CPU Ray: set compute.actors below {cpus:g} (or give actors GPUs)"
        )
    options = {"num_gpus": gpus, "num_cpus": 0 if gpus else 1}
    args = (list(plan.spec.models), list(plan.models), plan.scene_info, plan.bands, "cuda" if gpus else "cpu")
    actors = [actor_cls.options(**options).remote(*args) for _ in range(compute.actors)]
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
    progress: bool = True,
) -> RunResult:
    """Run a job end to end: plan, tiles on Ray, stitch, export.

    Raises:
        OutputExistsError: an output exists and ``overwrite`` is false (before any work).
        TileFailedError: tiles failed after their retries (outputs are written; the tile index names them).
    """
    start = time.perf_counter()
    plan = plan_job(spec)
    check_outputs(plan, overwrite)
    preflight(plan)
    workdir.prepare(plan.work_dir, spec, resume)
    stitchers = {m.name: LayerStitcher(plan.grid, m.merge_min_agreement) for m in plan.models}
    status: dict[str, TileStatus] = {t.id: TileStatus() for t in plan.tiles}
    todo = _resume(plan, stitchers, status) if resume else list(plan.tiles)
    resumed = len(plan.tiles) - len(todo)
    device = "cpu"
    with ray_session(address or spec.compute.address, spec):
        if todo:
            device = _stream_tiles(plan, todo, stitchers, status, progress)
        for info in plan.models:
            if info.merge != "core":
                _blend_pass(plan, info, stitchers[info.name], status, progress)
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
    show_progress: bool,
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
                _collect(ref, job.tile, stitchers, status, pending, compute.max_retries)
                bar.advance(status[job.tile.id].status)
    return ray.get(actors[0].device_name.remote())


def _blend_pass(
    plan: JobPlan, info: ModelInfo, stitcher: LayerStitcher, status: dict[str, TileStatus], show_progress: bool
) -> None:
    """Second pass for a blended layer: each finished tile blends its neighbours' saved scores, bounded in flight."""
    import ray

    blend = ray.remote(num_cpus=1, max_retries=1)(blend_tile)
    values = tuple(c.value for c in info.classes)
    todo = deque(t for t in plan.tiles if status[t.id].status in ("done", "resumed") and t.id not in stitcher.fragments)
    limit = plan.spec.compute.in_flight
    in_flight: dict[Any, Tile] = {}
    args = (plan.grid, info.name, info.merge, values, str(plan.work_dir))
    with TileProgress(len(todo), enabled=show_progress, label=f"blend {info.name}") as bar:
        while todo or in_flight:
            while todo and len(in_flight) < limit:
                tile = todo.popleft()
                in_flight[blend.remote(tile, *args)] = tile
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            tile = in_flight.pop(ready[0])
            try:
                stitcher.add(tile, ray.get(ready[0]))
            except (ray.exceptions.RayError, GeosegError) as err:
                state = status[tile.id]
                state.status, state.error = "failed", f"blend {info.name}: {_short_error(err)}"
                log.error("tile %s failed: %s", tile.id, state.error)
            bar.advance(status[tile.id].status)


def _collect(
    ref: Any,
    tile: Tile,
    stitchers: dict[str, LayerStitcher],
    status: dict[str, TileStatus],
    pending: deque[Tile],
    max_retries: int,
) -> None:
    import ray

    state = status[tile.id]
    try:
        record: TileRecord = ray.get(ref)
    except (ray.exceptions.RayError, GeosegError) as err:
        state.error = _short_error(err)
        if state.attempts <= max_retries:
            log.warning("tile %s failed (attempt %d), retrying: %s", tile.id, state.attempts, state.error)
            pending.append(tile)
            state.status = "retrying"
        else:
            log.error("tile %s failed after %d attempts: %s", tile.id, state.attempts, state.error)
            state.status = "failed"
        return
    for name, layer in record.layers.items():
        stitchers[name].add(tile, layer)
    state.status, state.seconds, state.error = "done", record.seconds, None


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
