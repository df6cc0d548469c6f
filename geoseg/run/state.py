"""The state one run's passes share: the plan, a stitcher per layer, how each tile went, progress and timings."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from geoseg.inputs.tiles import Tile
from geoseg.plan.job import JobPlan
from geoseg.run import workdir
from geoseg.run.progress import ProgressMode
from geoseg.run.timings import JobTimings
from geoseg.run.workdir import TileStatus
from geoseg.stitch.spool import layer_stitchers
from geoseg.stitch.stitcher import LayerStitcher

log = logging.getLogger(__name__)


@dataclass
class RunState:
    """One run's shared state, handed to every pass (instead of five arguments threaded through each)."""

    plan: JobPlan
    stitchers: dict[str, LayerStitcher]
    """Layer name -> its stitcher (spooling final objects to the work dir)."""
    status: dict[str, TileStatus]
    """Tile id -> how it went."""
    progress: bool | ProgressMode = True
    timings: JobTimings = field(default_factory=JobTimings)
    device: str = "cpu"
    """Where the model actors ran."""
    resumed: int = 0
    """Tiles an earlier run had finished."""
    job: str = ""
    """The job's key (:func:`geoseg.run.workdir.job_key`), stamped on each tile file."""

    @classmethod
    def start(cls, plan: JobPlan, progress: bool | ProgressMode, timings: JobTimings, job: str = "") -> RunState:
        """A fresh state: every tile pending, one spooling stitcher per model."""
        status = {t.id: TileStatus() for t in plan.tiles}
        return cls(plan, layer_stitchers(plan), status, progress, timings, job=job)

    def resume(self) -> list[Tile]:
        """Feed the tiles an earlier run finished (saved in the work dir) to the stitchers; the tiles still to do."""
        todo, stale = [], Counter[str]()
        work_dir = self.plan.outputs.work_dir
        for tile in self.plan.tiles:
            try:
                saved = workdir.load_tile(work_dir, tile.id, self.job)
            except workdir.StaleTileError as err:
                stale[str(err).split(" (")[0]] += 1
                workdir.discard_tile(work_dir, tile.id)
                saved = None
            if saved is None:
                todo.append(tile)
                continue
            for name, layer in saved.layers.items():
                self.stitchers[name].add(tile, layer)
            self.status[tile.id] = TileStatus("resumed", 0, saved.seconds)
        self.resumed = len(self.plan.tiles) - len(todo)
        for reason, count in stale.items():
            log.warning("%d saved tile(s) %s: redone", count, reason)
        return todo

    def failed(self) -> list[str]:
        """Ids of the tiles that failed for good."""
        return [tid for tid, s in self.status.items() if s.status == "failed"]
