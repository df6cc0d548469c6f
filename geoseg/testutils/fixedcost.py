"""A model of fixed cost per tile, for measuring how well the pipeline keeps the model actors busy.

:class:`FixedCostModel` wraps a real model: it runs it, then waits until ``seconds_per_tile`` times the batch size
has passed since the call began (sleeping, as a GPU model leaves the CPU free; or ``burn`` to spin the CPU), so
every batch costs the same whatever the tiles hold. Each call appends ``pid start end`` (wall clock) to ``log``,
from which the share of wall time the actors spent in ``predict`` follows (:func:`busy_intervals`).
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from geoseg.models.base import Model, ModelOutput, TileContext


class FixedCostModel(Model):
    """``inner``'s outputs at a fixed cost per tile (module docstring)."""

    def __init__(self, inner: Model, seconds_per_tile: float, log: Path, burn: bool = False) -> None:
        self.inner, self.seconds_per_tile, self.log, self.burn = inner, seconds_per_tile, Path(log), burn
        self.kind = inner.kind  # type: ignore[misc]  # the wrapped model's kind
        self.name, self.bands, self.classes = inner.name, inner.bands, inner.classes
        self.merge_min_agreement, self.needs_prompts = inner.merge_min_agreement, inner.needs_prompts

    def predict(self, pixels: np.ndarray, valid: np.ndarray, contexts: list[TileContext]) -> list[ModelOutput]:
        start = time.time()
        outputs = self.inner.predict(pixels, valid, contexts)
        until = start + self.seconds_per_tile * len(contexts)
        while (left := until - time.time()) > 0:
            if not self.burn:
                time.sleep(left)
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()} {start:.6f} {time.time():.6f}\n")
        return outputs


def busy_intervals(log: Path) -> dict[int, list[tuple[float, float]]]:
    """Per actor process: the (start, end) wall-clock times of its ``predict`` calls."""
    out: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for line in Path(log).read_text().splitlines():
        pid, start, end = line.split()
        out[int(pid)].append((float(start), float(end)))
    return dict(out)
