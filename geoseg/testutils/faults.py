"""Faults for the reliability tests and the soak benchmark: killing this process's own Ray actors, flaky tasks,
waiting for tiles to land in a work dir. Only descendants of the calling process are ever signalled."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import psutil
import rasterio


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


def kill_model_actors(
    root: int | None = None, limit: int | None = None, working_only: bool = False, name: str = "ModelActor"
) -> list[int]:
    """SIGKILL the model actor processes (``ray::ModelActor``; ``name="TileWorker"``: the tile workers of cheap
    models) under ``root``, the oldest first, at most ``limit``; ``working_only`` spares actors still loading their
    models (Ray titles them ``ray::ModelActor.__init__``). Returns the pids killed."""
    pids = []
    actors = sorted(descendants(f"ray::{name}", root), key=lambda p: p.create_time())
    if working_only:
        actors = [p for p in actors if "__init__" not in " ".join(p.cmdline())]
    for proc in actors[:limit]:
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


def assert_same_outputs(got: Path, expected: Path, layer: str = "fields", tiles: int = 64) -> None:
    """A job's instance layer (geometries and attributes), its id raster and its tile index match a reference
    run: nothing lost, nothing twice."""
    a = gpd.read_file(got, layer=layer).sort_values("id").reset_index(drop=True)
    b = gpd.read_file(expected, layer=layer).sort_values("id").reset_index(drop=True)
    assert len(a) == len(b) > 0
    assert a["id"].is_unique
    assert a.geometry.geom_equals(b.geometry).all()
    columns = [c for c in b.columns if c != "geometry"]
    assert a[columns].equals(b[columns])
    with (
        rasterio.open(got.with_name(f"{got.stem}_{layer}.tif")) as x,
        rasterio.open(expected.with_name(f"{expected.stem}_{layer}.tif")) as y,
    ):
        np.testing.assert_array_equal(x.read(1), y.read(1))
    index = gpd.read_file(got, layer="tiles")
    assert index["tile_id"].is_unique and len(index) == tiles
    assert index["status"].isin(["done", "resumed"]).all()


def corrupt_nir_bands(red: Path, nir: Path, folder: Path) -> dict[str, dict[str, str]]:
    """Copies of a scene's red and NIR files in ``folder``, 4 KiB of the NIR file's middle overwritten, so the tiles
    whose blocks sit there fail to read; returns the ``inputs.bands`` of a job reading them."""
    folder.mkdir(parents=True, exist_ok=True)
    data = bytearray(nir.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = b"\xff" * 4096
    (folder / "nir.tif").write_bytes(bytes(data))
    (folder / "red.tif").write_bytes(red.read_bytes())
    return {"red": {"path": str(folder / "red.tif")}, "nir": {"path": str(folder / "nir.tif")}}
