"""The bounded tile loop on a real local Ray: results, retries under the policy, failures after them."""

from __future__ import annotations

from typing import Any

import pytest

from geoseg.errors import InputError, TooManyFailedTilesError, error_gist
from geoseg.inputs.tiles import Tile, TileGrid
from geoseg.run.loop import RetryPolicy, _memory_hint, stream_tiles
from geoseg.run.progress import TileProgress
from geoseg.run.workdir import TileStatus


class _Recorder:
    """A pass whose tile ``r0000_c0000`` fails its first ``fail_until`` attempts; counts in-flight refs."""

    def __init__(self, ray: Any, fail_until: int, status: dict[str, TileStatus]) -> None:
        def flaky(tile_id: str, attempt: int, fail_until: int) -> str:  # local: pickled by value for the workers
            if attempt <= fail_until:
                raise InputError(f"tile {tile_id} unreadable (attempt {attempt})")
            return tile_id

        self.task = ray.remote(num_cpus=1, max_retries=0)(flaky)
        self.fail_until = fail_until
        self.tries: dict[str, int] = {}
        self.in_flight = 0
        self.most_in_flight = 0
        self.done: list[str] = []
        self.failures: list[tuple[str, str, int, bool]] = []
        self.status = status
        self.batches: list[int] = []

    def submit(self, batch: list[Tile]) -> list[Any]:
        self.batches.append(len(batch))
        refs = []
        for tile in batch:
            self.tries[tile.id] = self.tries.get(tile.id, 0) + 1
            fail_until = self.fail_until if tile.id == "r0000_c0000" else 0
            refs.append(self.task.remote(tile.id, self.tries[tile.id], fail_until))
        self.in_flight += len(batch)
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        return refs

    def settled(self, ref: Any) -> None:
        self.in_flight -= 1

    def succeeded(self, tile: Tile, value: Any, attempts: int) -> None:
        assert value == tile.id
        self.done.append(tile.id)

    def failed(self, tile: Tile, error: str, attempts: int, retrying: bool) -> None:
        self.failures.append((tile.id, error, attempts, retrying))
        if not retrying:
            self.status[tile.id] = TileStatus("failed", attempts, error=error)


@pytest.mark.parametrize(("fail_until", "finished"), [(2, True), (3, False)])
def test_retries_then_gives_up(ray_local, fail_until, finished):
    tiles = list(TileGrid(40, 40, 10, 2))
    status = {t.id: TileStatus() for t in tiles}
    work = _Recorder(ray_local, fail_until, status)
    stream_tiles(
        tiles, work, status, limit=5, batch_size=2, retry=RetryPolicy(max_retries=2), progress=TileProgress(16, False)
    )
    assert work.most_in_flight <= 5 and work.in_flight == 0
    assert ("r0000_c0000" in work.done) == finished
    assert sorted(work.done) == sorted(t.id for t in tiles if finished or t.id != "r0000_c0000")
    assert work.tries["r0000_c0000"] == 3  # one try and two retries, whichever way it ends
    assert [f[2:] for f in work.failures] == [(1, True), (2, True)] + ([] if finished else [(3, False)])
    assert work.failures[0][1] == "InputError: tile r0000_c0000 unreadable (attempt 1)"  # the remote error's gist


@pytest.mark.parametrize(("limit", "batch_size"), [(8, 4), (6, 4), (3, 4)])
def test_batches_are_whole(ray_local, limit, batch_size):
    """The loop waits for room for a whole batch: the model never gets batches cut to the free slots."""
    tiles = list(TileGrid(50, 50, 10, 2))  # 25 tiles
    status = {t.id: TileStatus() for t in tiles}
    work = _Recorder(ray_local, 0, status)
    stream_tiles(
        tiles, work, status, limit=limit, batch_size=batch_size, retry=RetryPolicy(), progress=TileProgress(25, False)
    )
    whole = min(batch_size, limit)
    assert sorted(work.done) == sorted(t.id for t in tiles) and work.most_in_flight <= limit
    assert work.batches[:-1] == [whole] * (len(work.batches) - 1) and 0 < work.batches[-1] <= whole


def test_failure_budget_stops_the_loop(ray_local):
    tiles = list(TileGrid(40, 40, 10, 2))
    status = {t.id: TileStatus() for t in tiles}
    work = _Recorder(ray_local, 5, status)
    policy = RetryPolicy(max_retries=0, max_failed_tiles=0)
    with pytest.raises(TooManyFailedTilesError, match=r"stopped after 1 failed tiles .*first: r0000_c0000"):
        stream_tiles(tiles, work, status, limit=4, batch_size=2, retry=policy, progress=TileProgress(16, False))
    assert len(work.done) < len(tiles) - 1  # stopped early, not at the end


def test_retry_policy():
    assert [RetryPolicy(1).retries(a) for a in (1, 2)] == [True, False]
    assert not RetryPolicy(0).retries(1)
    assert not RetryPolicy().stops(1000) and RetryPolicy(max_failed_tiles=2).stops(3)


def test_error_gist_of_tracebacks_and_plain_errors():
    remote = "ray::finish()\nTraceback (most recent call last):\n  File x\ngeoseg.errors.InputError: no pixels"
    assert error_gist(RuntimeError(remote)) == "InputError: no pixels"
    torch_like = "Error(s) in loading state_dict for UNet:\n\tMissing key(s): head.weight"
    assert error_gist(RuntimeError(torch_like)) == "Missing key(s): head.weight"
    assert error_gist(ValueError()) == "ValueError"


def test_a_tile_lost_to_memory_says_what_to_lower():
    """Ray's OOM kill (or the kernel's) in a tile's error: the error gains the machine's memory and what to lower;
    other errors are left as they are. (A real OOM kill cannot be had in a test.)"""
    oom = RuntimeError("ray.exceptions.OutOfMemoryError: Task was killed due to the node running low on memory.")
    hint = _memory_hint(oom)
    assert hint.startswith(" (a worker may have run out of memory: ") and "GB on this machine" in hint
    assert "lower tiling.tile_size or compute.batch_size" in hint
    assert _memory_hint(RuntimeError("cannot read nir.tif")) == ""
