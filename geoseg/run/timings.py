"""Wall seconds of a run's stages, recorded in the job table (``seconds_<stage>`` rows) beside the tile index's
per-tile read / model / finish seconds. What is left of a run's wall time is the writing of the outputs (while
Ray shuts down in the background)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass


@dataclass
class JobTimings:
    """Wall seconds per stage of one run (the driver's view)."""

    plan: float = 0.0
    """Opening the scene, the tile grid, the valid-pixel check, scene-wide statistics."""
    ray_start: float = 0.0
    """Starting (or joining) Ray."""
    actors_start: float = 0.0
    """Starting the model actors and loading their models."""
    tiles: float = 0.0
    """The model pass: from the first submission to the last tile back (read, model, finish run in workers)."""
    stitch: float = 0.0
    """Driver time spent adding finished tiles to the stitchers during the passes (part of ``tiles``)."""
    blend: float = 0.0
    """The blend passes of blended layers."""
    refine: float = 0.0
    """The second passes of models prompted by another model's objects (``prompts_from``), actors' start included."""
    objects: float = 0.0
    """Merging fragments into objects and building the layers (cleaning, measuring, statistics)."""
    masks: float = 0.0
    """Writing the mask COGs, after the objects (class COGs are written alongside the objects, id COGs after)."""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Add the wall seconds of the ``with`` block to stage ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, name, getattr(self, name) + time.perf_counter() - start)

    def rows(self) -> dict[str, str]:
        """Job-table rows: ``seconds_<stage>`` -> seconds (3 decimals)."""
        return {f"seconds_{name}": f"{value:.3f}" for name, value in asdict(self).items()}
