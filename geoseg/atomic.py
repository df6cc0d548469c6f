"""Writing files atomically: a temp file in the final folder, renamed onto the final path once complete.

Every file geoseg writes goes through here, so a crash never leaves a half-written file under its final name and
an existing file survives a failed write. :func:`atomic_output` is for outputs (GDAL may leave sidecars beside
the temp file; never clobbers without ``overwrite``); :func:`atomic_write` for geoseg's own small files (work-dir
tiles, checkpoints, markers), which it always replaces.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import glob
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from geoseg.errors import GeosegError, OutputExistsError

__all__ = [
    "as_disk_full",
    "atomic_output",
    "atomic_write",
    "check_output_absent",
    "fsync_file",
    "output_set",
    "remove_stale_temps",
    "remove_temp",
    "temp_path",
]

_Pending = list[tuple[Path, Path, bool]]
_OUTPUT_SET: contextvars.ContextVar[_Pending | None] = contextvars.ContextVar("geoseg_output_set", default=None)
"""The outputs written inside :func:`output_set`, waiting to be renamed together: (temp, final, overwrite)."""

FULL_BELOW = 1 << 20
"""Bytes free under which a library's failed write is taken for a full disk (:func:`as_disk_full`)."""


@contextlib.contextmanager
def output_set() -> Iterator[None]:
    """Publish the outputs of every :func:`atomic_output` inside the block together, once the whole block
    succeeded: a failure anywhere (a full disk at the last file) leaves the previous set of outputs as it was and
    no temp file behind. Threads that write outputs must run in a copy of the caller's context
    (``contextvars.copy_context().run``).

    Raises:
        OutputExistsError: an output appeared meanwhile and ``overwrite`` was false (checked before any rename).
    """
    pending: _Pending = []
    token = _OUTPUT_SET.set(pending)
    try:
        yield
        for _, final, overwrite in pending:
            check_output_absent(final, overwrite)
        for tmp, final, overwrite in pending:
            _publish(tmp, final, overwrite)
    finally:
        _OUTPUT_SET.reset(token)
        for tmp, _, _ in pending:
            remove_temp(tmp)


@contextlib.contextmanager
def atomic_output(final: Path, overwrite: bool = False) -> Iterator[Path]:
    """Write a file under a temporary name, then rename it onto ``final``.

    Yields a path that does not exist yet, in ``final``'s folder (created if missing) and with its suffix so
    GDAL picks the same driver, e.g. ``.out.gpkg.tmp-1a2b3c4d.gpkg``. When the block succeeds, the file is
    renamed onto ``final`` in one step. When it raises, the temporary file and its sidecars are removed and an
    existing ``final`` is left untouched.

    Args:
        final: The output's path.
        overwrite: Replace an existing ``final``.

    Raises:
        OutputExistsError: ``final`` exists and ``overwrite`` is false (checked before and after the block).
    """
    final = Path(final)
    check_output_absent(final, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp, pending = temp_path(final), _OUTPUT_SET.get()
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp} for {final}")
        fsync_file(tmp)
        if pending is not None:  # renamed with the rest of the set (output_set)
            pending.append((tmp, final, overwrite))
            return
        _publish(tmp, final, overwrite)
    except Exception as err:
        full = as_disk_full(err, final.parent)
        if full is not err and full is not None:
            raise full from err
        raise
    finally:
        if pending is None or all(tmp != t for t, _, _ in pending):
            remove_temp(tmp)


def temp_path(final: Path, suffix: str | None = None) -> Path:
    """A fresh hidden path beside ``final``: ``.<name>.tmp-<random><suffix>`` (suffix defaults to final's)."""
    token = secrets.token_hex(4)
    return final.with_name(f".{final.name}.tmp-{token}{final.suffix if suffix is None else suffix}")


def check_output_absent(final: Path, overwrite: bool) -> None:
    """Fail early, before any work, when ``final`` exists and may not be replaced."""
    if not overwrite and final.exists():
        raise OutputExistsError(f"{final} exists; pass --overwrite or change output.path")


def _publish(tmp: Path, final: Path, overwrite: bool) -> None:
    """Rename ``tmp`` onto ``final``; without overwrite, never clobber a file that appeared meanwhile."""
    if overwrite:
        os.replace(tmp, final)
        return
    try:
        os.link(tmp, final)  # atomic "create if absent"
    except FileExistsError:
        raise OutputExistsError(f"{final} exists; pass --overwrite or change output.path") from None
    except OSError:  # file systems without hard links
        check_output_absent(final, overwrite)
        os.replace(tmp, final)
    else:
        tmp.unlink()


def as_disk_full(err: BaseException, folder: Path) -> OSError | None:
    """The "no space left" error a failed write amounts to, or None: ``err`` itself when it is ENOSPC; an
    ``OSError(ENOSPC)`` naming ``folder`` for SQLite's "disk is full", or for any library's error (GDAL's "Failed
    to commit transaction") while ``folder``'s file system has under :data:`FULL_BELOW` bytes free."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return err
    if not isinstance(err, Exception) or isinstance(err, GeosegError):
        return None
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    if "disk is full" in str(err) or free < FULL_BELOW:
        return OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({free // 1024} KiB free) writing in {folder}")
    return None


def remove_stale_temps(finals: list[Path]) -> list[Path]:
    """Remove the temp files an earlier run that was killed left beside ``finals`` (``.<name>.tmp-*``); the
    paths removed."""
    removed = []
    for final in finals:
        if final.parent.is_dir():
            for stale in final.parent.glob(glob.escape(f".{final.name}.tmp-") + "*"):
                if stale.is_file():
                    stale.unlink(missing_ok=True)
                    removed.append(stale)
    return removed


def remove_temp(tmp: Path) -> None:
    """Remove ``tmp`` and GDAL / SQLite files beside it (``-journal``, ``-wal``, ``.aux.xml``, ``.ovr``)."""
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(tmp.parent):
            if entry.name.startswith(tmp.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def atomic_write(final: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a fresh temp path beside ``final`` (same suffix), flush it to the disk, then rename
    it onto ``final``: after a power cut ``final`` is the old file or the whole new one, never a torn one."""
    tmp = temp_path(Path(final))
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def fsync_file(path: Path) -> None:
    """Flush a written file's data to the disk (what a rename after it needs to be durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
