"""Claiming a work dir: geoseg empties and fills only a folder it made, and one job uses it at a time.

A work dir is geoseg's when it holds nothing but what geoseg writes there (``manifest.json``, ``lock``,
``tiles/*.npz``, ``scores/<layer>/*.npy``, the ``objects.*`` spools and their temp files); any other file means the
folder is someone else's (``output.work_dir: .`` beside the inputs) and it is refused, never emptied. The claim is
an OS lock (``flock``) on ``lock`` in the work dir, held while the job runs: the OS drops it when the driver dies,
so a killed job never leaves it stuck.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

from geoseg.errors import WorkDirError

MANIFEST = "manifest.json"
LOCK = "lock"
TILE_FILE = re.compile(r"r\d+_c\d+\.npz")
SCORES_FILE = re.compile(r"r\d+_c\d+\.npy")
TEMP_FILE = re.compile(r"\..+\.tmp-[0-9a-f]+(\.\w+)?")
"""A temp file of :mod:`geoseg.atomic` (``.<name>.tmp-<hex><suffix>``)."""


def foreign_entry(work_dir: Path) -> str | None:
    """The first thing in ``work_dir`` that geoseg did not put there (a path relative to it), or None."""
    if not work_dir.exists():
        return None
    if not work_dir.is_dir():
        return "it is a file"
    names = sorted(p.name for p in work_dir.iterdir())
    if names and MANIFEST not in names and set(names) - {LOCK}:
        return f"no {MANIFEST}, but {names[0]}"
    for name in names:
        path = work_dir / name
        if name in (MANIFEST, LOCK) or TEMP_FILE.fullmatch(name) or name.startswith("objects."):
            if path.is_file():
                continue
        elif name == "tiles" and path.is_dir():
            found = _foreign_file(path, TILE_FILE)
            if found is None:
                continue
            return f"tiles/{found}"
        elif name == "scores" and path.is_dir():
            found = _foreign_scores(path)
            if found is None:
                continue
            return f"scores/{found}"
        return name
    return None


def _foreign_file(folder: Path, pattern: re.Pattern[str]) -> str | None:
    for entry in os.scandir(folder):
        if not entry.is_file(follow_symlinks=False) or not (
            pattern.fullmatch(entry.name) or TEMP_FILE.fullmatch(entry.name)
        ):
            return entry.name
    return None


def _foreign_scores(folder: Path) -> str | None:
    for entry in os.scandir(folder):
        if not entry.is_dir(follow_symlinks=False):
            return entry.name
        found = _foreign_file(Path(entry.path), SCORES_FILE)
        if found is not None:
            return f"{entry.name}/{found}"
    return None


def _holder(fd: int) -> str:
    """Who holds the lock on ``fd``'s file, from ``/proc/locks`` (Linux; nothing is written to the lock file, so a
    refused job changes nothing on disk)."""
    inode = os.fstat(fd).st_ino
    with contextlib.suppress(OSError):
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].endswith(f":{inode}"):
                return f"pid {fields[4]} on {socket.gethostname()}"
    return "another process"


def check_ours(work_dir: Path) -> None:
    """Refuse a work dir that holds anything geoseg did not write (it would be emptied).

    Raises:
        WorkDirError: ``work_dir`` is a file, or holds a file or folder that is not geoseg's.
    """
    found = foreign_entry(work_dir)
    if found is not None:
        raise WorkDirError(
            f"{work_dir} is not a geoseg work dir ({found}) and geoseg empties its work dir: "
            "set output.work_dir to a new or empty folder"
        )


@contextlib.contextmanager
def claimed(work_dir: Path) -> Iterator[None]:
    """Hold the work dir for one job: check it is geoseg's, create it, take its lock until the block ends.

    Raises:
        WorkDirError: the folder is not geoseg's (:func:`check_ours`), or another job holds its lock.
    """
    check_ours(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(work_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkDirError(
                f"{work_dir} is in use by another geoseg job ({_holder(fd)}); wait for it to end, "
                "or give this job its own output.path or output.work_dir"
            ) from None
        yield
    finally:
        os.close(fd)  # closing drops the lock
