"""A progress bar for tiles: done / total, tiles per second, ETA, failures (rich)."""

from __future__ import annotations

from types import TracebackType

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TileProgress:
    """Context manager around a rich progress bar; a no-op when disabled."""

    def __init__(self, total: int, enabled: bool = True, label: str = "tiles") -> None:
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
            disable=not enabled,
            transient=False,
        )
        self._task = self._progress.add_task("tiles", total=total, rate="-", failed="")

    def __enter__(self) -> TileProgress:
        self._progress.__enter__()
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
        task = self._progress.tasks[0]
        speed = task.speed
        self._progress.update(
            self._task,
            advance=1,
            rate=f"{speed:.1f}" if speed else "-",
            failed=f"[red]{self.failed} failed[/red]" if self.failed else "",
        )
