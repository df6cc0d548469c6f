"""Tile progress: a bar for a terminal (rich), or plain lines for a cluster job's log that ``geoseg status`` reads.

A line looks like ``geoseg-progress stage=tiles done=5 failed=1 total=9`` (``done`` counts every tile that left
the pipeline, failed ones included); :func:`last_progress` finds the newest one in a log.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

ProgressMode = Literal["bar", "lines", "off"]
PROGRESS_PREFIX = "geoseg-progress"
_PROGRESS_LINE = re.compile(rf"^{PROGRESS_PREFIX} stage=(.+?) done=(\d+) failed=(\d+) total=(\d+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class ProgressReport:
    """Where a job's tiles stand: ``done`` of ``total`` left the pipeline, ``failed`` of them failed."""

    stage: str
    done: int
    failed: int
    total: int

    def line(self) -> str:
        return f"{PROGRESS_PREFIX} stage={self.stage} done={self.done} failed={self.failed} total={self.total}"


def last_progress(log: str) -> ProgressReport | None:
    """The newest progress line in a job's log, or None when the job has printed none yet."""
    found = None
    for match in _PROGRESS_LINE.finditer(log):
        found = match
    if found is None:
        return None
    stage, done, failed, total = found.groups()
    return ProgressReport(stage, int(done), int(failed), int(total))


class _ProgressLines:
    """Progress as plain lines on stdout: at the start, at most every ``interval`` seconds, and at the end."""

    def __init__(self, total: int, label: str, interval: float = 1.0) -> None:
        self.report = ProgressReport(label.replace(" ", "_"), 0, 0, total)
        self.interval, self.last = interval, 0.0

    def emit(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= self.interval:
            print(self.report.line(), file=sys.stdout, flush=True)
            self.last = now

    def advance(self, failed: bool) -> None:
        r = self.report
        self.report = ProgressReport(r.stage, r.done + 1, r.failed + failed, r.total)
        self.emit(force=self.report.done == r.total)


class TileProgress:
    """Context manager around a rich progress bar (``bar``, or True), progress lines (``lines``), or nothing."""

    def __init__(self, total: int, enabled: bool | ProgressMode = True, label: str = "tiles") -> None:
        mode = ("bar" if enabled else "off") if isinstance(enabled, bool) else enabled
        self._lines = _ProgressLines(total, label) if mode == "lines" else None
        self.failed = 0
        self._progress = Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} tiles/s"),
            TextColumn("{task.fields[failed]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            disable=mode != "bar",
            transient=False,
        )
        self._task = self._progress.add_task("tiles", total=total, rate="-", failed="")

    def __enter__(self) -> TileProgress:
        self._progress.__enter__()
        if self._lines:
            self._lines.emit(force=True)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.__exit__(exc_type, exc, tb)

    def advance(self, status: str) -> None:
        """Count a tile that left the pipeline (done or failed); retries are not counted."""
        if status == "retrying":
            return
        self.failed += status == "failed"
        if self._lines:
            self._lines.advance(status == "failed")
        task = self._progress.tasks[0]
        speed = task.speed
        self._progress.update(
            self._task,
            advance=1,
            rate=f"{speed:.1f}" if speed else "-",
            failed=f"[red]{self.failed} failed[/red]" if self.failed else "",
        )
