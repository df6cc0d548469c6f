"""Exceptions that tell the user what to change.

Every error geoseg raises on purpose derives from :class:`GeosegError`; the CLI prints its message on one
line and exits non-zero. Subclasses also inherit the builtin they resemble, as rasterio's do.
"""

from __future__ import annotations

import re


class GeosegError(Exception):
    """Root of geoseg's errors: a message that says what to change."""

    exit_code = 2
    """The CLI's exit status for this error."""


class SpecError(GeosegError, ValueError):
    """The job spec is invalid (unknown key, wrong type, inconsistent settings)."""


class InputError(GeosegError, OSError):
    """An input raster or vector cannot be opened or does not fit the job."""


class OutputError(GeosegError, OSError):
    """An output cannot be written where the spec says (missing or read-only folder)."""


class OutputExistsError(GeosegError, FileExistsError):
    """An output exists and ``--overwrite`` was not given."""


class WeightsError(GeosegError, OSError):
    """Model weights are missing, truncated, corrupt or do not match the chosen variant."""


class MissingDependencyError(GeosegError, ImportError):
    """An optional dependency is missing; the message holds the ``pip install`` line."""


class TileFailedError(GeosegError, RuntimeError):
    """One or more tiles failed after their retries; the tile index layer names them."""


class TooManyFailedTilesError(TileFailedError):
    """More tiles failed than ``compute.max_failed_tiles`` allows: the job stopped early, no outputs written."""

    exit_code = 3


class NoGpuError(GeosegError, RuntimeError):
    """``compute.device: gpu`` and the cluster gave no GPUs in time."""


class ClusterError(GeosegError, ConnectionError):
    """The Ray head cannot be reached, or refuses a request (unknown job id, authentication)."""


class JobTerminated(BaseException):
    """SIGTERM arrived: unwinds like KeyboardInterrupt (Ray shut down, finished tiles kept); the CLI exits 143."""


def raise_job_terminated(signum: int, frame: object) -> None:
    """SIGTERM handler: unwind like Ctrl-C, so that Ray shuts down and finished tiles stay in the work dir."""
    raise JobTerminated()


_ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.+)$")


def error_gist(err: BaseException, limit: int = 200) -> str:
    """The gist of an exception on one line, for messages, logs and the tile index.

    A traceback in the message (Ray's remote errors carry one) gives its innermost ``SomeError: message`` line;
    otherwise the first line of the message (torch's state_dict errors put the gist on the second).
    """
    text = str(err)
    raised = [m.groups() for m in map(_ERROR_LINE.match, text.splitlines()) if m]
    if raised:
        name, message = raised[-1]
        return f"{name}: {message}"[:limit]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if lines and lines[0].startswith("Error(s) in loading state_dict") and len(lines) > 1:
        lines = lines[1:]
    return lines[0][:limit] if lines else type(err).__name__


class WorkDirError(GeosegError, OSError):
    """The work dir is not geoseg's (it holds other files), or another job is using it."""
