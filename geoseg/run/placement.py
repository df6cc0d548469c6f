"""Where the model actors run (``compute.device``): CPU, or GPU shares that the cluster must provide.

- ``cpu``: one CPU per actor, whatever ``gpus_per_actor`` says.
- ``auto``: GPU actors if the cluster has the GPUs when the job starts, else CPU actors (logged either way).
- ``gpu``: the actors' GPU shares are reserved as a Ray placement group, which an autoscaler sees as demand and
  scales a GPU group up for (from zero, too); the job waits up to ``gpu_wait_s`` and then fails with one line.
  It never falls back to CPU actors.

Orchestration: imports ``ray`` (like :mod:`geoseg.run.passes`, which uses it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from geoseg.errors import GeosegError, NoGpuError
from geoseg.spec.job import ComputeSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActorPlacement:
    """Resources of each model actor, and the placement group holding their GPUs (``gpu`` only)."""

    device: Literal["cpu", "cuda"]
    num_gpus: float
    group: Any = None

    def options(self, index: int) -> dict[str, Any]:
        """``ActorClass.options(...)`` for actor ``index``."""
        options: dict[str, Any] = {"num_gpus": self.num_gpus, "num_cpus": 0 if self.num_gpus else 1}
        if self.group is not None:
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                self.group, placement_group_bundle_index=index
            )
        return options


def place_actors(compute: ComputeSpec) -> ActorPlacement:
    """Decide the actors' device from ``compute.device`` (with ``gpu``: reserve the GPUs, waiting for them)."""
    import ray

    if compute.device == "gpu":
        return _reserve_gpus(compute)
    resources = ray.cluster_resources()
    gpus, share = resources.get("GPU", 0), compute.gpus_per_actor
    if compute.device == "auto" and share > 0 and gpus >= share:
        log.info("compute.device auto: GPU actors (%g GPU each; the cluster has %g GPUs)", share, gpus)
        return ActorPlacement("cuda", share)
    if compute.device == "auto" and share > 0:
        log.warning("compute.device auto: asked for %g GPU(s) per actor, the cluster has %g: CPU actors", share, gpus)
    else:
        log.info("compute.device %s: CPU actors", compute.device)
    cpus = resources.get("CPU", 0)
    if compute.actors >= cpus:
        raise GeosegError(
            f"compute.actors={compute.actors} CPU model actors leave no CPU for reading tiles on this "
            f"{cpus:g}-CPU Ray: set compute.actors below {cpus:g} (or give actors GPUs)"
        )
    return ActorPlacement("cpu", 0)


def _reserve_gpus(compute: ComputeSpec) -> ActorPlacement:
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    share = compute.gpus_per_actor
    group = placement_group([{"GPU": share}] * compute.actors, strategy="PACK")
    log.info("compute.device gpu: waiting up to %g s for %d x %g GPU", compute.gpu_wait_s, compute.actors, share)
    try:
        ray.get(group.ready(), timeout=compute.gpu_wait_s)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(group)
        have = ray.cluster_resources().get("GPU", 0)
        raise NoGpuError(
            f"compute.device gpu: the cluster gave no GPUs for {compute.actors} model actor(s) x {share:g} GPU "
            f"within {compute.gpu_wait_s:g} s (it has {have:g} GPUs): give it a GPU worker group that can scale "
            f"up, raise compute.gpu_wait_s, or set compute.device to auto or cpu"
        ) from None
    log.info("compute.device gpu: GPU actors (%g GPU each)", share)
    return ActorPlacement("cuda", share, group)
