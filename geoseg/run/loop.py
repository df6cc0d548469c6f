"""Tiles through Ray: one bounded ``ray.wait`` loop with one retry policy, and how each tile went.

The model pass and the blend pass of :mod:`geoseg.run.passes` both run here. A pass is a :class:`TilePass` (submit a
batch, hear of each result or failure); :func:`stream_tiles` keeps at most ``limit`` tiles in flight, waits for the
next one to settle, retries a failing tile as :class:`RetryPolicy` says, and stops the job once more tiles failed
than the policy allows. Ray is imported when a loop runs.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from geoseg.errors import GeosegError, TooManyFailedTilesError, error_gist
from geoseg.inputs.tiles import Tile
from geoseg.run.progress import TileProgress
from geoseg.run.workdir import TileStatus

log = logging.getLogger(__name__)

ERROR_CHARS = 300
"""Longest error kept per tile (the tile index's ``error`` column)."""


@dataclass(frozen=True)
class RetryPolicy:
    """A tile that fails is submitted again until it has failed ``1 + max_retries`` times; the job stops once
    more than ``max_failed_tiles`` tiles failed for good (None: never)."""

    max_retries: int = 2
    max_failed_tiles: int | None = None
    tile_timeout_s: float | None = None
    """Seconds a tile may stay in flight before the worker holding it is deemed hung (None: no deadline)."""

    def retries(self, attempts: int) -> bool:
        """Whether a tile that failed on its ``attempts``-th try goes again."""
        return attempts <= self.max_retries

    def stops(self, failed: int) -> bool:
        """Whether ``failed`` tiles failed for good are more than the job may lose."""
        return self.max_failed_tiles is not None and failed > self.max_failed_tiles


class TileWork(Protocol):
    """One pass over tiles as the loop sees it: what to submit for a batch, and what to do with each outcome."""

    def submit(self, batch: list[Tile]) -> list[Any]:
        """Submit a batch; one Ray object ref per tile, in order."""

    def settled(self, ref: Any) -> None:
        """A submitted ref finished, either way (e.g. to balance actors)."""

    def succeeded(self, tile: Tile, value: Any, attempts: int) -> None:
        """A tile's result arrived."""

    def failed(self, tile: Tile, error: str, attempts: int, retrying: bool) -> None:
        """A tile failed; ``retrying`` says whether the policy sends it again."""

    def hung(self, refs: list[Any]) -> str:
        """Submitted refs are past their deadline: stop the workers that hold them; what was done, in words."""


class TilePass:
    """The base of every pass: how a failure is logged and recorded, once for all passes.

    The model pass owns a tile's state (``owns_status``: retrying, attempts); a later pass (blend, refine) only
    marks a tile failed for good, its error prefixed by the pass's ``label``.
    """

    label = ""
    owns_status = False

    def __init__(self, status: dict[str, TileStatus]) -> None:
        self.status = status

    def settled(self, ref: Any) -> None:
        """Nothing to balance by default."""

    def hung(self, refs: list[Any]) -> str:
        """Kill the worker processes running the tasks (the loop resubmits the tiles)."""
        _cancel(refs)
        return "its task was killed"

    def failed(self, tile: Tile, error: str, attempts: int, retrying: bool) -> None:
        state = self.status[tile.id]
        message = f"{self.label}: {error}" if self.label else error
        if self.owns_status:
            state.attempts = attempts
        if retrying:
            if self.owns_status:
                state.status, state.error = "retrying", message
            log.warning("tile %s failed (attempt %d%s), retrying: %s", tile.id, attempts, self._of(), message)
            return
        state.status, state.error = "failed", message
        log.error("tile %s failed after %d attempts%s: %s", tile.id, attempts, self._of(), message)

    def _of(self) -> str:
        return f" of {self.label}" if self.label else ""


class ActorLoad:
    """Model actors that take whole batches, and the tiles each has in flight: a batch goes to the least busy."""

    def __init__(self, actors: list[Any]) -> None:
        self.actors = actors
        self.load = [0] * len(actors)
        self.slots: dict[Any, int] = {}

    def least_busy(self) -> int:
        return self.load.index(min(self.load))

    def send_batch(
        self, slot: int, batch: list[Tile], transforms: list[Any], prompts: list[Any], reads: list[Any]
    ) -> list[Any]:
        """One result reference per tile of the batch, from one ``predict_batch`` call of actor ``slot``."""
        outs = (
            self.actors[slot].predict_batch.options(num_returns=len(batch)).remote(batch, transforms, prompts, *reads)
        )
        return outs if isinstance(outs, list) else [outs]

    def track(self, refs: list[Any], slot: int) -> None:
        """Count ``refs`` (one per tile) against actor ``slot`` until each settles."""
        self.slots |= dict.fromkeys(refs, slot)
        self.load[slot] += len(refs)

    def settled(self, ref: Any) -> None:
        self.load[self.slots.pop(ref)] -= 1

    def kill(self, refs: list[Any]) -> str:
        """Kill the actors that hold ``refs`` (each restarts and reloads its models) and cancel the refs; what was
        done, in words."""
        import ray

        slots = sorted({self.slots[r] for r in refs if r in self.slots})
        for slot in slots:
            ray.kill(self.actors[slot], no_restart=False)
        _cancel(refs)
        return f"actor {', '.join(map(str, slots))} killed and restarted" if slots else "its task was killed"


def _cancel(refs: list[Any]) -> None:
    """Cancel tasks, killing the worker of a running one (an actor's task can only be cancelled)."""
    import ray

    for ref in refs:
        try:
            ray.cancel(ref, force=True)
        except (ValueError, TypeError):  # an actor task
            ray.cancel(ref)


def stream_tiles(
    tiles: Iterable[Tile],
    work: TileWork,
    status: dict[str, TileStatus],
    *,
    limit: int,
    batch_size: int,
    retry: RetryPolicy,
    progress: TileProgress,
) -> None:
    """Push tiles through ``work`` with at most ``limit`` in flight, batches of up to ``batch_size``.

    Raises:
        TooManyFailedTilesError: more tiles in ``status`` failed than ``retry`` allows (in-flight work cancelled).
    """
    import ray

    pending: deque[Tile] = deque(tiles)
    flight = _Flight(retry.tile_timeout_s)
    attempts: Counter[str] = Counter()
    while pending or flight.tiles:
        # whole batches only: topping up one free slot at a time would send the model batches of one tile
        while pending and len(flight.tiles) + min(batch_size, len(pending), limit) <= limit:
            batch = [pending.popleft() for _ in range(min(batch_size, len(pending), limit))]
            attempts.update(t.id for t in batch)
            flight.add(work.submit(batch), batch)
        ready, _ = ray.wait(list(flight.tiles), num_returns=1, timeout=flight.wait_s())
        for tile, value, error in [*flight.settle(ready, work), *flight.overdue(work)]:
            if error is None:
                work.succeeded(tile, value, attempts[tile.id])
                progress.advance("done")
                continue
            if "No space left on device" in error:  # the work dir is full: every tile would fail so
                raise OSError(errno.ENOSPC, f"{error} (tile {tile.id}, saving in the work dir)")
            retrying = retry.retries(attempts[tile.id])
            work.failed(tile, error, attempts[tile.id], retrying)
            if retrying:
                pending.append(tile)
                continue
            progress.advance("failed")
            _stop_if_over_budget(retry, status, list(flight.tiles))


class _Flight:
    """The refs in flight, the tile of each and when it was submitted (for the deadline)."""

    def __init__(self, timeout_s: float | None) -> None:
        self.timeout_s = timeout_s
        self.tiles: dict[Any, Tile] = {}
        self.since: dict[Any, float] = {}

    def add(self, refs: list[Any], batch: list[Tile]) -> None:
        now = time.monotonic()
        self.tiles.update(zip(refs, batch, strict=True))
        self.since |= dict.fromkeys(refs, now)

    def pop(self, ref: Any) -> Tile:
        self.since.pop(ref)
        return self.tiles.pop(ref)

    def settle(self, ready: list[Any], work: TileWork) -> list[tuple[Tile, Any, str | None]]:
        """Take the ready refs out of flight: each tile, its value, and its error (None when it succeeded)."""
        import ray

        out: list[tuple[Tile, Any, str | None]] = []
        for ref in ready:
            tile = self.pop(ref)
            work.settled(ref)
            try:
                out.append((tile, ray.get(ref), None))
            except (ray.exceptions.RayError, GeosegError) as err:
                out.append((tile, None, error_gist(err, ERROR_CHARS) + _memory_hint(err)))
        return out

    def wait_s(self) -> float | None:
        """How long ``ray.wait`` may block: until the oldest ref's deadline (None: no deadline)."""
        if self.timeout_s is None or not self.since:
            return None
        return max(0.05, min(self.since.values()) + self.timeout_s - time.monotonic())

    def overdue(self, work: TileWork) -> list[tuple[Tile, Any, str | None]]:
        """Take the refs past their deadline out of flight, stopping the workers that hold them; each tile and why."""
        if self.timeout_s is None:
            return []
        now = time.monotonic()
        refs = [r for r, t in self.since.items() if now - t >= self.timeout_s]
        if not refs:
            return []
        done = work.hung(refs)
        tiles = [self.pop(ref) for ref in refs]
        for ref in refs:
            work.settled(ref)
        why = f"no result after {self.timeout_s:g} s (compute.tile_timeout_s); {done}"
        log.warning("tile(s) %s: %s; retrying", ", ".join(t.id for t in tiles), why)
        return [(tile, None, why) for tile in tiles]


def _memory_hint(err: BaseException) -> str:
    """What to lower, when a worker was killed for memory (Ray's OutOfMemoryError, or the OS's OOM killer)."""
    text = f"{type(err).__name__} {err}"
    if not any(word in text for word in ("OutOfMemory", "out of memory", "OOM", "memory pressure")):
        return ""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f" (a worker may have run out of memory: {total:.0f} GB on this machine; lower tiling.tile_size or "
        "compute.batch_size)"
    )


def _stop_if_over_budget(retry: RetryPolicy, status: dict[str, TileStatus], in_flight: list[Any]) -> None:
    """Stop the job once more tiles failed than the policy allows (finished tiles are kept in the work dir)."""
    import ray

    failed = [tid for tid, s in status.items() if s.status == "failed"]
    if not retry.stops(len(failed)):
        return
    for ref in in_flight:
        ray.cancel(ref)
    raise TooManyFailedTilesError(
        f"stopped after {len(failed)} failed tiles (compute.max_failed_tiles={retry.max_failed_tiles}; first: "
        f"{failed[0]}: {status[failed[0]].error}); fix the cause and rerun with --resume to keep the finished tiles"
    )
