"""Writing files atomically: a temp file in the final folder, renamed onto the final path once complete.

Every file geoseg writes goes through here, so a crash never leaves a half-written file under its final name and
an existing file survives a failed write. :func:`atomic_output` is for outputs (GDAL may leave sidecars beside
the temp file; never clobbers without ``overwrite``); :func:`atomic_write` for geoseg's own small files (work-dir
tiles, checkpoints, markers), which it always replaces.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

from geoseg.errors import OutputExistsError

__all__ = ["atomic_output", "atomic_write", "check_output_absent", "fsync_file", "remove_temp", "temp_path"]


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
    tmp = temp_path(final)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp} for {final}")
        fsync_file(tmp)
        _publish(tmp, final, overwrite)
    finally:
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
