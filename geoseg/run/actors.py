"""The Ray actors and tasks of a run: model actors, tile workers, and the read / finish / blend tasks."""

from __future__ import annotations

from typing import Any

from geoseg.errors import GeosegError, error_gist
from geoseg.inputs.reads import strip_cache_mb
from geoseg.inputs.tiles import Tile
from geoseg.plan.job import JobPlan
from geoseg.run.loop import ActorLoad, TilePass
from geoseg.run.placement import place_actors
from geoseg.run.tilework import ModelHost, TileJob, TileWorker, blend_tile, finish_tile, read_tile
from geoseg.run.workdir import TileStatus

START_ERROR_CHARS = 300


class ModelActor(ModelHost):
    """The model actor: :class:`~geoseg.run.tilework.ModelHost` shaped for Ray's ``num_returns``."""

    def predict_batch(self, *args: Any) -> Any:
        """One result per tile; a bare result for a batch of one (``num_returns=1`` wants one object)."""
        results = self.predict(*args)
        return results[0] if len(results) == 1 else results


def remote_finish() -> Any:
    """Ray's handle of the finish task (a tile's model outputs -> its fragments, saved in the work dir)."""
    import ray

    return ray.remote(num_cpus=1, max_retries=1)(finish_tile)


def remote_blend() -> Any:
    """Ray's handle of the blend task."""
    import ray

    return ray.remote(num_cpus=1, max_retries=1)(blend_tile)


def start_actors(plan: JobPlan, names: set[str]) -> list[Any]:
    """Start model actors holding the models ``names``, where ``compute.device`` puts them
    (:mod:`geoseg.run.placement`)."""
    import ray

    # a killed actor always restarts (its models reload); a batch it held is rerun there, then by the driver
    actor_cls = ray.remote(max_restarts=-1, max_task_retries=2)(ModelActor)
    placement = place_actors(plan.spec.compute)
    specs = [m for m in plan.spec.models if m.name in names]
    infos = [m for m in plan.models if m.name in names]
    args = (specs, infos, plan.scene_info, plan.bands, placement.device)
    actors = [actor_cls.options(**placement.options(i)).remote(*args) for i in range(plan.spec.compute.actors)]
    return _started(actors)


def start_tile_workers(plan: JobPlan, job: str = "") -> list[Any]:
    """One tile worker per CPU of the cluster (each loads the models once); ``job``: the job's key."""
    import ray

    worker_cls = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=2)(TileWorker)
    blended = frozenset(m.name for m in plan.models if m.merge != "core")
    count = max(1, int(ray.cluster_resources().get("CPU", 1)))
    strip = -(-plan.grid.shape[1] // count) * plan.grid.tile_size
    paths = [path for name in plan.bands for path in plan.scene.band(name).paths]
    cache = strip_cache_mb(paths, plan.grid.read_size, strip + plan.grid.read_size)
    job_info = TileJob(plan.scene, plan.bands, plan.stats, str(plan.outputs.work_dir), blended, cache, job)
    args = (list(plan.spec.models), list(plan.models), plan.scene_info, job_info, "cpu")
    return _started([worker_cls.remote(*args) for _ in range(count)])


def _started(actors: list[Any]) -> list[Any]:
    """The actors, once each has loaded its models."""
    import ray

    try:
        ray.get([actor.device_name.remote() for actor in actors])  # models load once per actor, here
    except ray.exceptions.RayError as err:
        raise GeosegError(f"model actor failed to start: {error_gist(err, START_ERROR_CHARS)}") from None
    return actors


def device_of(actors: list[Any]) -> str:
    """The device the first actor's models run on."""
    import ray

    return str(ray.get(actors[0].device_name.remote()))


class ActorPass(TilePass):
    """A pass through model actors: read tasks -> the least busy actor (one call per batch) -> a finish task per
    tile. A subclass says which prompts a tile gets and how its result is stored."""

    def __init__(self, status: dict[str, TileStatus], plan: JobPlan, actors: list[Any]) -> None:
        import ray

        super().__init__(status)
        self.plan, self.actors, self.busy = plan, actors, ActorLoad(actors)
        self.read = ray.remote(num_cpus=1, max_retries=1)(read_tile)

    def prompts_for(self, tile: Tile) -> dict[str, Any]:
        """Model name -> the tile's prompts."""
        raise NotImplementedError

    def finish(self, tile: Tile, out: Any) -> Any:
        """Submit the finish task of a tile's model result; its ref."""
        raise NotImplementedError

    def submit(self, batch: list[Tile]) -> list[Any]:
        plan, slot = self.plan, self.busy.least_busy()
        reads = [self.read.remote(plan.scene, t, plan.bands) for t in batch]
        transforms = [t.read_transform(plan.scene.transform) for t in batch]
        outs = self.busy.send_batch(slot, batch, transforms, [self.prompts_for(t) for t in batch], reads)
        refs = [self.finish(t, out) for t, out in zip(batch, outs, strict=True)]
        self.busy.track(refs, slot)
        return refs

    def settled(self, ref: Any) -> None:
        self.busy.settled(ref)

    def hung(self, refs: list[Any]) -> str:
        return self.busy.kill(refs)
