"""The Ray session of a run: connect to a cluster, reuse a running Ray, or start an embedded one; shut it down after
(in the background while the outputs are written, see :class:`Shutdown`). Orchestration: imports ``ray``."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from geoseg.errors import GeosegError, raise_job_terminated
from geoseg.run.timings import JobTimings
from geoseg.spec.job import JobSpec


class Shutdown:
    """Ray's shutdown in a thread, so the outputs are written meanwhile; :meth:`join` before the run returns."""

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.then: Any = None
        """Called by :meth:`join` in the calling thread once Ray is down (restores the SIGTERM handler)."""

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()
        if self.then is not None:
            self.then()
        self.thread = self.then = None


@dataclass(frozen=True)
class RayStarted:
    """Ray brought up for a run, possibly before the run began (:mod:`geoseg.launch`)."""

    here: bool
    """This process started (or joined) Ray and shuts it down after the run; false when Ray was already up."""
    seconds: float
    """Wall seconds ``ray.init`` took."""


def start_ray(address: str | None, spec: JobSpec) -> RayStarted:
    """Connect to a cluster (``address``), or start an embedded Ray bound to 127.0.0.1; nothing if Ray is up.

    Raises:
        GeosegError: the cluster at ``address`` cannot be reached.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    if address is None and "ray" not in sys.modules:  # read when ray is first imported
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # embedded Ray binds to 127.0.0.1
    import ray

    if ray.is_initialized():
        return RayStarted(here=False, seconds=0.0)
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address is None:
        kwargs |= {
            "num_cpus": spec.compute.num_cpus,
            "include_dashboard": False,
            "object_store_memory": spec.compute.object_store_mb * 2**20,
        }
    start = time.perf_counter()
    try:
        # "local" always starts a fresh Ray: a stale `ray start` address file must not be joined
        ray.init(address=address or "local", **kwargs)
    except ConnectionError as err:
        raise GeosegError(f"cannot reach the Ray cluster at {address}: {err}") from None
    return RayStarted(here=True, seconds=time.perf_counter() - start)


def stop_ray(started: RayStarted) -> None:
    """Shut down a Ray this process started (a no-op once the run's session has)."""
    if started.here:
        shutdown_ray()


def shutdown_ray() -> None:
    """``ray.shutdown()``, less the second Ray waits on its autoscaler monitor when it started Ray here.

    Ray stops the GCS before the monitor; the monitor's SIGTERM handler then reports its own end to the GCS that is
    gone and hangs until Ray's one-second grace period ends in SIGKILL (ray-project/ray#30672 tells of the order).
    A Ray started by ``ray.init`` has no autoscaler to stop gracefully, so its monitor gets the SIGKILL first.
    Reaches into ``ray._private`` for the monitor's process; if that is not there, it is plain ``ray.shutdown()``.
    """
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    processes = getattr(node, "all_processes", None) or {}
    for info in processes.get("monitor", []):  # ray_constants.PROCESS_TYPE_MONITOR, only for a head started here
        process = getattr(info, "process", None)
        if process is not None and process.poll() is None:
            process.kill()
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
    ray.shutdown()


@contextmanager
def ray_session(
    address: str | None,
    spec: JobSpec,
    timings: JobTimings | None = None,
    shutdown: Shutdown | None = None,
    started: RayStarted | None = None,
) -> Iterator[None]:
    """Ray for one run: ``started`` when it was brought up before, else :func:`start_ray` now.

    On leaving, Ray (if started for this run) shuts down: in ``shutdown``'s thread when given, else now.
    """
    timings = timings or JobTimings()
    if started is None:
        with timings.stage("ray_start"):
            started = start_ray(address, spec)
    else:
        timings.ray_start += started.seconds
    if not started.here:
        yield
        return

    previous = _on_sigterm(raise_job_terminated)  # ray.init set its own (sys.exit(15))
    try:
        yield
    finally:
        if shutdown is None:
            shutdown_ray()
            _on_sigterm(previous)
        else:
            shutdown.thread = threading.Thread(target=shutdown_ray, name="ray-shutdown", daemon=True)
            shutdown.thread.start()
            shutdown.then = lambda: _on_sigterm(previous)


def _on_sigterm(handler: Any) -> Any:
    """Install a SIGTERM handler (main thread only); returns the previous one."""
    if threading.current_thread() is not threading.main_thread() or handler is None:
        return None
    return signal.signal(signal.SIGTERM, handler)
