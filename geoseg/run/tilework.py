"""The work done for one tile, as plain functions that Ray tasks and actors call.

read (CPU task) -> models (model actor, a batch of tiles) -> finish (CPU task: keep the core, vectorize, save);
or, for cheap CPU models, all three in one :class:`TileWorker` (one per CPU), where the pixels were read: no pixels
through Ray's object store, the input files kept open with their decoded blocks between tiles.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio.env

from geoseg.inputs.reads import READ_CACHE_MB, OpenFiles
from geoseg.inputs.scene import Scene, read_window
from geoseg.inputs.tiles import Tile, TileGrid
from geoseg.models import ModelInfo, build_model, resolve_device
from geoseg.models.base import Model, ModelOutput, Prompts, SceneInfo, SemanticOutput, StatsRole, TileContext
from geoseg.run.workdir import StageSeconds, add_layer, load_scores, save_scores, save_tile
from geoseg.spec.job import ModelSpec
from geoseg.stitch.blend import blend_classes, ring_tile
from geoseg.stitch.stitcher import LayerTile, StatsSource, tile_layer

log = logging.getLogger(__name__)


@dataclass
class ModelResult:
    """One tile's model outputs by model name, and its seconds so far (read, model)."""

    outputs: dict[str, ModelOutput]
    seconds: StageSeconds


@dataclass
class TileRecord:
    """What a finished tile sends back to the driver: small (fragments and edge strips, no rasters)."""

    tile: Tile
    layers: dict[str, LayerTile]
    seconds: StageSeconds = field(default_factory=StageSeconds)


_FILES: OpenFiles | None = None


def worker_files(cache_mb: int = READ_CACHE_MB) -> OpenFiles:
    """This process's open input files, GDAL's block cache set to ``cache_mb`` on first use (memory stays bounded)."""
    global _FILES
    if _FILES is None:
        rasterio.env.set_gdal_config("GDAL_CACHEMAX", cache_mb * 2**20)
        _FILES = OpenFiles()
    return _FILES


@dataclass(frozen=True)
class TileRead:
    """A tile's read window: its bands, which pixels are valid, and the seconds the read took."""

    pixels: np.ndarray
    """(bands, rows, cols) float32."""
    valid: np.ndarray
    """(rows, cols) bool."""
    seconds: float


def read_tile(scene: Scene, tile: Tile, bands: tuple[str, ...], files: OpenFiles | None = None) -> TileRead:
    """Read a tile's read window (files kept open by this process)."""
    start = time.perf_counter()
    pixels, valid = read_window(scene, tile.read, bands, files=files or worker_files())
    return TileRead(pixels, valid, time.perf_counter() - start)


class ModelHost:
    """Holds the job's models (built once) and runs them on batches of tiles."""

    def __init__(
        self,
        specs: list[ModelSpec],
        infos: list[ModelInfo],
        scene: SceneInfo,
        bands: tuple[str, ...],
        device: str,
    ) -> None:
        self.device = resolve_device(device)
        if self.device != device:
            log.warning("no CUDA device visible to the model actor: running on CPU")
        self.models: list[Model] = [build_model(spec, scene, self.device) for spec in specs]
        self.indices = [[bands.index(b) for b in info.bands] for info in infos]
        gc.freeze()  # modules and models live as long as the worker: keep them out of every full collection

    def device_name(self) -> str:
        return self.device

    def predict(
        self, tiles: list[Tile], transforms: list[Any], prompts: list[dict[str, Prompts]], *reads: TileRead
    ) -> list[ModelResult]:
        """Run every model on a batch of read tiles (one ``read_tile`` result each).

        Returns per tile its outputs and seconds (read, and its share of the batch's model time).
        """
        start = time.perf_counter()
        pixels = reads[0].pixels[None] if len(reads) == 1 else np.stack([r.pixels for r in reads])
        valid = reads[0].valid[None] if len(reads) == 1 else np.stack([r.valid for r in reads])
        outputs: list[dict[str, ModelOutput]] = [{} for _ in tiles]
        for model, idx in zip(self.models, self.indices, strict=True):
            contexts = [
                TileContext(t, tr, p.get(model.name)) for t, tr, p in zip(tiles, transforms, prompts, strict=True)
            ]
            selected = pixels if idx == list(range(len(pixels[0]))) else pixels[:, idx]  # all bands: no copy
            for i, out in enumerate(model.predict(selected, valid, contexts)):
                outputs[i][model.name] = out
        seconds = (time.perf_counter() - start) / len(tiles)
        return [ModelResult(out, StageSeconds(r.seconds, seconds)) for out, r in zip(outputs, reads, strict=True)]


@dataclass(frozen=True)
class TileJob:
    """What a :class:`TileWorker` needs besides its models: where pixels come from and where tiles go."""

    scene: Scene
    bands: tuple[str, ...]
    stats: StatsRole | None
    work_dir: str
    blended: frozenset[str] = frozenset()
    cache_mb: int = READ_CACHE_MB
    """GDAL's block cache of the worker (:func:`geoseg.inputs.reads.strip_cache_mb`)."""
    job: str = ""
    """The job's key, stamped on each tile file (:func:`geoseg.run.workdir.job_key`)."""


class TileWorker(ModelHost):
    """Read, models and finish of one tile in one process, for models cheap enough to run where the pixels are
    read (the model pass's split into read task, model actor and finish task ships every tile's pixels and model
    outputs through Ray's object store)."""

    def __init__(
        self, specs: list[ModelSpec], infos: list[ModelInfo], scene: SceneInfo, job: TileJob, device: str
    ) -> None:
        super().__init__(specs, infos, scene, job.bands, device)
        self.job = job
        self.files = worker_files(job.cache_mb)

    def process(self, tile: Tile, transform: Any, prompts: dict[str, Prompts]) -> TileRecord:
        """One tile, start to finish: read, run the models, keep the core, vectorize, save."""
        job = self.job
        result = self.predict([tile], [transform], [prompts], read_tile(job.scene, tile, job.bands, self.files))[0]
        return finish_tile(tile, result, job.stats, job.work_dir, job.blended, job.job)


def stats_source(outputs: dict[str, ModelOutput], role: StatsRole | None) -> StatsSource | None:
    """Per-object statistics come from the outputs of the model that has the statistics role, if any."""
    if role is None:
        return None
    out = outputs[role.model]
    assert isinstance(out, SemanticOutput)
    return StatsSource(out.classes, len(role.classes) + 1, out.layers, hist_layers=role.hist_layers)


def finish_tile(
    tile: Tile,
    result: ModelResult,
    stats_role: StatsRole | None,
    work_dir: str,
    blended: frozenset[str] = frozenset(),
    job: str = "",
) -> TileRecord:
    """Keep what the tile owns, vectorize it, save it to the work dir; return the small record.

    Layers in ``blended`` only save their class probabilities here: they are blended with the neighbours' and
    vectorized in a second pass (:func:`blend_tile`).
    """
    start = time.perf_counter()
    outputs = result.outputs
    for name in blended:
        scores = outputs.pop(name)
        assert isinstance(scores, SemanticOutput) and scores.scores is not None, f"{name} gives no scores"
        save_scores(Path(work_dir), name, tile.id, scores.scores)
    stats = stats_source(outputs, stats_role)
    layers: dict[str, LayerTile] = {}
    cores: dict[str, np.ndarray] = {}
    for name, output in outputs.items():
        layer_stats = stats
        if stats is not None and isinstance(output, SemanticOutput):
            layer_stats = StatsSource(layers=stats.layers)  # zones: index means only
        layers[name], cores[name] = tile_layer(output, tile, layer_stats)
    seconds = replace(result.seconds, finish=time.perf_counter() - start)
    save_tile(Path(work_dir), tile.id, layers, cores, seconds, job)
    return TileRecord(tile, layers, seconds)


def blend_tile(
    tile: Tile, grid: TileGrid, name: str, method: str, class_values: tuple[int, ...], work_dir: str
) -> LayerTile:
    """Second pass of a blended layer: blend the saved scores around a tile, keep its core, vectorize, save."""
    folder = Path(work_dir)
    classes = blend_classes(
        tile, grid, lambda t: load_scores(folder, name, t.id), method, np.asarray(class_values, np.uint8)
    )
    layer, core = tile_layer(SemanticOutput(classes), ring_tile(tile))
    add_layer(folder, tile.id, name, layer, core)
    return layer
