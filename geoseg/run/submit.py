"""Cluster jobs through the Ray Jobs API: submit a spec, follow its state and progress, read its logs, stop it.

Runs on the machine that submits (a laptop, a CI runner) and talks HTTP to the head node's dashboard
(``http://HEAD:8265``). The job's driver runs on the head:
``geoseg -v run SPEC --address auto --progress lines``. Its progress lines in the job's log
(:mod:`geoseg.run.progress`) are how :func:`job_state` learns tiles done / total: the log is the one channel the Jobs
API gives a running job, it needs no extra service, and it outlives the job.

Only the spec travels (a runtime-env ``working_dir`` holding that one file); every path in it must be absolute or
a URI, the same on every node. Rasters never travel with a job.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from geoseg import __version__
from geoseg.errors import ClusterError, SpecError
from geoseg.run.progress import ProgressReport, last_progress
from geoseg.spec.job import parse_spec, read_spec_yaml
from geoseg.spec.paths import relative_paths

ADDRESS_ENV = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")


@dataclass(frozen=True)
class JobState:
    """A submitted job as the head reports it, with the progress its log shows."""

    submission_id: str
    status: str
    """PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED."""
    message: str
    entrypoint: str
    progress: ProgressReport | None

    def summary(self) -> str:
        """One line: id, state, tiles done / total (and failures), Ray's message when the job ended badly."""
        parts = [self.submission_id, self.status]
        if self.progress:
            p = self.progress
            failed = f", {p.failed} failed" if p.failed else ""
            parts.append(f"{p.stage} {p.done}/{p.total}{failed}")
        if self.status in ("FAILED", "STOPPED") and self.message:
            parts.append(self.message.strip().splitlines()[-1][:200])
        return "  ".join(parts)


def resolve_address(address: str | None) -> str:
    """The head's dashboard address: the argument, else ``$RAY_API_SERVER_ADDRESS`` / ``$RAY_ADDRESS``."""
    for value in (address, *(os.environ.get(name) for name in ADDRESS_ENV)):
        if value:
            return value
    raise ClusterError("no Ray head given: pass --address http://HEAD:8265 (or set RAY_API_SERVER_ADDRESS)")


@contextmanager
def _head(address: str | None) -> Iterator[Any]:
    """A Jobs API client for the head; the head's errors become one-line :class:`ClusterError` s."""
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    from ray.job_submission import JobSubmissionClient

    url = resolve_address(address)
    try:
        client = JobSubmissionClient(url)
    except ConnectionError:
        raise ClusterError(
            f"no Ray head answers at {url}: is the cluster up, and its dashboard port (8265) reachable from here "
            "(e.g. through `kubectl port-forward`)?"
        ) from None
    except (RuntimeError, ValueError) as err:  # e.g. authentication refused, not a Ray dashboard
        raise ClusterError(f"Ray head at {url}: {_one_line(err)}") from None
    try:
        yield client
    except (ConnectionError, RuntimeError) as err:
        raise ClusterError(f"Ray head at {url}: {_one_line(err)}") from None


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return (text or type(err).__name__)[:300]


def check_cluster_spec(spec_path: str | Path) -> None:
    """Refuse a spec that cannot run on a cluster: invalid, or with paths relative to the submitting machine."""
    raw = read_spec_yaml(spec_path)
    found = relative_paths(raw, str(spec_path))
    if found:
        key, path = found[0]
        more = f" (+{len(found) - 1} more)" if len(found) > 1 else ""
        raise SpecError(
            f"{spec_path}: {key} is a relative path ({path!r}){more}: a cluster job reads its files on the "
            "cluster's nodes, so give absolute paths on storage every node mounts (e.g. /data/...) or URIs "
            "(s3://..., /vsis3/...)"
        )
    parse_spec(raw, Path(spec_path).parent, str(spec_path))


def submit_job(
    spec_path: str | Path,
    address: str | None,
    *,
    submission_id: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
) -> str:
    """Submit a spec to the cluster as a Ray job running ``geoseg run``; returns the submission id."""
    spec_path = Path(spec_path)
    check_cluster_spec(spec_path)
    flags = [flag for flag, on in (("--overwrite", overwrite), ("--resume", resume)) if on]
    entrypoint = shlex.join(["geoseg", "-v", "run", spec_path.name, "--address", "auto", "--progress", "lines", *flags])
    with tempfile.TemporaryDirectory(prefix="geoseg-submit-") as staging, _head(address) as client:
        shutil.copyfile(spec_path, Path(staging) / spec_path.name)  # the spec alone: nothing else travels
        return str(
            client.submit_job(
                entrypoint=entrypoint,
                submission_id=submission_id,
                runtime_env={"working_dir": staging},
                metadata={"geoseg_spec": spec_path.name, "geoseg_version": __version__},
            )
        )


def job_state(submission_id: str, address: str | None) -> JobState:
    """The job's state, and its tiles done / total from the newest progress line in its log."""
    with _head(address) as client:
        info = client.get_job_info(submission_id)
        log = client.get_job_logs(submission_id)
    status = getattr(info.status, "value", str(info.status))
    return JobState(submission_id, status, info.message or "", info.entrypoint, last_progress(log))


def job_logs(submission_id: str, address: str | None, follow: bool = False, out: TextIO | None = None) -> None:
    """Write the job's log so far to ``out`` (stdout); with ``follow``, keep writing until the job ends."""
    out = out or sys.stdout
    with _head(address) as client:
        if not follow:
            out.write(client.get_job_logs(submission_id))
            return
        client.get_job_info(submission_id)  # an unknown id fails here, in one line

        async def tail() -> None:
            async for chunk in client.tail_job_logs(submission_id):
                out.write(chunk)
                out.flush()

        asyncio.run(tail())


def stop_job(submission_id: str, address: str | None) -> bool:
    """Ask the cluster to stop the job; False when it had already ended."""
    with _head(address) as client:
        return bool(client.stop_job(submission_id))
