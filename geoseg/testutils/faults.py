"""Faults for the reliability tests and the soak benchmark: killing this process's own Ray actors, flaky tasks,
waiting for tiles to land in a work dir. Only descendants of the calling process are ever signalled."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil


def descendants(cmdline_part: str, root: int | None = None) -> list[psutil.Process]:
    """Live descendants of ``root`` (default: this process) whose command line contains ``cmdline_part``."""
    found = []
    for proc in psutil.Process(root or os.getpid()).children(recursive=True):
        try:
            if cmdline_part in " ".join(proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def kill_model_actors(root: int | None = None) -> list[int]:
    """SIGKILL every model actor process (``ray::ModelRunner``) under ``root``; returns their pids."""
    pids = []
    for proc in descendants("ray::ModelRunner", root):
        try:
            proc.send_signal(signal.SIGKILL)
            pids.append(proc.pid)
        except psutil.Error:
            continue
    return pids


def saved_tiles(work_dir: Path) -> int:
    """Tiles finished so far in a work dir."""
    tiles = work_dir / "tiles"
    return sum(1 for p in tiles.glob("*.npz") if not p.name.startswith(".")) if tiles.is_dir() else 0


def wait_for_tiles(work_dir: Path, count: int, timeout: float = 300.0, alive: Callable[[], bool] | None = None) -> int:
    """Wait until ``count`` tiles are saved (or the job ended: ``alive`` false); returns the number saved."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = saved_tiles(work_dir)
        if done >= count or (alive is not None and not alive()):
            return done
        time.sleep(0.05)
    raise TimeoutError(f"fewer than {count} tiles in {work_dir} after {timeout} s")


def fail_once(func: Callable[..., Any], marker_dir: str, tile_ids: set[str]) -> Callable[..., Any]:
    """``func`` (first argument a tile) that raises on the first call for each of ``tile_ids``, across processes
    (a marker file per tile remembers the failure)."""

    def flaky(tile: Any, *args: Any, **kwargs: Any) -> Any:
        marker = Path(marker_dir) / f"{tile.id}.failed"
        if tile.id in tile_ids and not marker.exists():
            marker.touch()
            raise RuntimeError(f"injected failure of tile {tile.id}")
        return func(tile, *args, **kwargs)

    return flaky
