"""The pipeline on one screen: plan -> passes of tiles on Ray -> export.

    plan_job (geoseg.plan)  ->  run_passes (geoseg.run: model, blend, refine passes)  ->  export (geoseg.export)

Ray shuts down in the background while the outputs are written.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from geoseg.atomic import as_disk_full, output_set, remove_stale_temps
from geoseg.errors import GeosegError, TileFailedError
from geoseg.export.layers import ExportSummary, export
from geoseg.plan.job import JobPlan, input_files, plan_job, preflight
from geoseg.plan.outputs import TILES_LAYER, check_outputs
from geoseg.run import workdir
from geoseg.run.claim import MANIFEST, claimed
from geoseg.run.passes import fused, run_passes
from geoseg.run.progress import ProgressMode
from geoseg.run.session import RayStarted, Shutdown, ray_session
from geoseg.run.state import RunState
from geoseg.run.timings import JobTimings
from geoseg.spec.job import JobSpec

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a run produced."""

    outputs: ExportSummary
    tiles_done: int
    tiles_resumed: int
    tiles_failed: int
    seconds: float
    device: str


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

    Args:
        spec: The job (:func:`geoseg.load_spec`).
        overwrite: Replace existing outputs.
        resume: Keep the tiles an earlier run of the same job finished (its work dir).
        address: A Ray cluster to join (``auto``, ``ray://...``); default: an embedded local Ray.
        progress: A progress bar (True), plain lines (``"lines"``) or nothing (False).
        started: Ray brought up before the call (:mod:`geoseg.launch`); shut down like one started here.

    Returns:
        What was written, tile counts, wall seconds and the device the models ran on.

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
    with claimed(plan.outputs.work_dir):  # one job per work dir, and only a folder geoseg made
        for stale in remove_stale_temps(plan.outputs.files()):
            log.warning("removed %s, left by a run that was killed while writing it", stale)
        try:
            state = _passes(plan, resume, address, progress, shutdown, started, checkpoints, timings)
            with output_set():  # every output renamed at once, or none (a full disk keeps the previous set)
                result = _export(plan, state, overwrite, timings, start)
            _raise_if_failed(plan, state)  # outputs written: the tile index names the failed tiles
            return result
        except Exception as err:
            full = as_disk_full(err, plan.outputs.work_dir)  # the spool's SQLite, the tiles' work dir
            if full is not None and full is not err:
                raise full from err
            raise


def _passes(
    plan: JobPlan,
    resume: bool,
    address: str | None,
    progress: bool | ProgressMode,
    shutdown: Shutdown,
    started: RayStarted | None,
    checkpoints: list[Path],
    timings: JobTimings,
) -> RunState:
    """Prepare the work dir and run every pass of tiles on Ray."""
    spec, work_dir = plan.spec, plan.outputs.work_dir
    fresh_work_dir = not (work_dir / MANIFEST).exists()
    job = workdir.prepare(work_dir, spec, resume, input_files(plan), checkpoints)
    state = RunState.start(plan, progress, timings, job)
    todo = state.resume() if resume else list(plan.tiles)
    try:
        with ray_session(address or spec.compute.address, spec, timings, shutdown, started):
            run_passes(state, todo)
    except GeosegError:
        if fresh_work_dir:  # failed before any work (Ray, actors): leave nothing behind
            workdir.discard_if_unused(work_dir)
        raise
    return state


def _export(plan: JobPlan, state: RunState, overwrite: bool, timings: JobTimings, start: float) -> RunResult:
    """Write the outputs."""
    failed = state.failed()
    pipeline = "tile workers" if fused(plan) else "model actors"
    meta = {"device": state.device, "pipeline": pipeline, "tiles_failed": len(failed), "tiles_resumed": state.resumed}
    outputs = export(plan, state.stitchers, state.status, meta, overwrite, timings)
    seconds = time.perf_counter() - start
    return RunResult(outputs, len(plan.tiles) - len(failed), state.resumed, len(failed), seconds, state.device)


def _raise_if_failed(plan: JobPlan, state: RunState) -> None:
    """Tiles failed after their retries: one error naming the first and the tile index."""
    failed = state.failed()
    if failed:
        first = state.status[failed[0]].error
        raise TileFailedError(
            f"{len(failed)} of {len(plan.tiles)} tiles failed (first: {failed[0]}: {first}); outputs were written "
            f"with them empty, see the '{TILES_LAYER}' layer; fix the cause and rerun with --resume"
        )
