"""Training a U-Net (:mod:`geoseg.models.unet.model`) on a job's inputs and a label raster, patch by patch.

The scene is never in memory: random patches are read with :func:`~geoseg.inputs.scene.read_window`, their labels with a
nearest-neighbour warp of the label raster onto the patch's grid (any CRS or resolution). Band statistics come from
the decimated whole-scene read of :func:`~geoseg.inputs.scene.read_overview`. The last strip of the scene (20 % of its
longer side) is held out: no training patch touches it, and pixel accuracy is measured there. This module chooses
the data (no torch); :mod:`geoseg.models.unet.fit` fits the network.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from geoseg.errors import InputError, OutputExistsError
from geoseg.inputs.scene import Scene, overview_shape, read_overview, read_window
from geoseg.models.unet.meta import IGNORE, PALETTE, Patch, SidecarClass, TrainingMetrics, UNetSidecar, sidecar_path
from geoseg.plan.job import open_job_scene
from geoseg.spec.job import JobSpec

"""(pixels (C, H, W), valid (H, W), int64 targets (H, W): label - 1, :data:`IGNORE` where unusable)."""


# --------------------------------------------------------------------------------------------- labels
@dataclass(frozen=True)
class Labels:
    """A single-band label raster (values 1..K, 0 = ignore) read onto windows of the scene grid."""

    path: str
    scene: Scene

    def read(self, window: Window, out_shape: tuple[int, int] | None = None) -> np.ndarray:
        """int64 (H, W) labels over a scene window (nearest resampling), 0 where the raster has no data."""
        rows, cols = out_shape or (int(window.height), int(window.width))
        transform = rasterio.windows.transform(window, self.scene.transform) @ Affine.scale(
            window.width / cols, window.height / rows
        )
        try:
            with rasterio.open(self.path) as src, WarpedVRT(
                src, crs=self.scene.crs, transform=transform, width=cols, height=rows,
                resampling=Resampling.nearest, add_alpha=src.nodata is None,
            ) as vrt:  # fmt: skip
                data = vrt.read(1).astype(np.int64)
                data[vrt.read_masks(1) == 0] = 0
        except rasterio.RasterioIOError as err:
            raise InputError(f"cannot read labels {self.path}: {err}") from None
        return data

    def colors(self) -> dict[int, tuple[int, int, int, int]]:
        """The label raster's colour table (value -> RGBA), empty without one."""
        with rasterio.open(self.path) as src:
            try:
                return {int(k): (int(v[0]), int(v[1]), int(v[2]), int(v[3])) for k, v in src.colormap(1).items()}
            except ValueError:
                return {}


def open_labels(path: str | Path, scene: Scene) -> Labels:
    """Check that a label raster opens, has one band and a CRS."""
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise InputError(f"labels {path} have no CRS: assign one (gdal_edit.py -a_srs EPSG:...)")
            if src.count != 1:
                raise InputError(f"labels {path} have {src.count} bands: give a single-band class raster")
    except rasterio.RasterioIOError as err:
        raise InputError(f"cannot open labels {path}: {err}") from None
    return Labels(str(path), scene)


def class_table(labels: Labels, names: list[str] | None) -> list[SidecarClass]:
    """Sidecar classes: one per value 1..K, K from ``names`` or the largest label in a decimated read."""
    scene = labels.scene
    overview = labels.read(Window(0, 0, scene.width, scene.height), overview_shape(scene))
    top = int(overview.max())
    if top < 1:
        raise InputError(f"labels {labels.path} hold no class values 1..K over the scene: check their extent and CRS")
    if names is not None and top > len(names):
        raise InputError(f"labels {labels.path} hold value {top} but --class-names names {len(names)} class(es)")
    names = names or [f"class_{v}" for v in range(1, top + 1)]
    colors = labels.colors()
    return [
        SidecarClass(value=v, name=name, color=list(colors.get(v, PALETTE[(v - 1) % len(PALETTE)])))
        for v, name in enumerate(names, start=1)
    ]


# --------------------------------------------------------------------------------------------- sampling
def band_stats(scene: Scene, bands: tuple[str, ...]) -> tuple[list[float], list[float]]:
    """Per-band mean and std of valid pixels over a decimated whole-scene read."""
    pixels, valid = read_overview(scene, bands)
    values = pixels[:, valid].astype(np.float64)
    return values.mean(axis=1).tolist(), np.maximum(values.std(axis=1), 1e-6).tolist()


@dataclass(frozen=True)
class Split:
    """Training and held-out regions of the scene (pixel windows that do not overlap)."""

    train: Window
    held_out: Window


def split_scene(scene: Scene, patch: int, fraction: float = 0.2) -> Split:
    """Hold out the last ``fraction`` of the scene's longer side (at least one patch)."""
    along_rows = scene.height >= scene.width
    length = scene.height if along_rows else scene.width
    held = max(patch, round(fraction * length))
    if length - held < patch or min(scene.width, scene.height) < patch:
        raise InputError(
            f"the scene ({scene.width} x {scene.height} px) is too small for patches of {patch} px and a held-out "
            f"strip: lower --patch-size"
        )
    cut = length - held
    if along_rows:
        return Split(Window(0, 0, scene.width, cut), Window(0, cut, scene.width, held))
    return Split(Window(0, 0, cut, scene.height), Window(cut, 0, held, scene.height))


def _starts(length: int, patch: int) -> list[int]:
    """Patch offsets tiling ``length`` (the last one shifted back to fit)."""
    starts = list(range(0, max(1, length - patch + 1), patch))
    if starts[-1] + patch < length:
        starts.append(length - patch)
    return starts


def held_out_windows(region: Window, patch: int, limit: int = 64) -> list[Window]:
    """Non-overlapping-ish patches covering the held-out region, at most ``limit`` (evenly picked)."""
    rows = _starts(int(region.height), min(patch, int(region.height)))
    cols = _starts(int(region.width), min(patch, int(region.width)))
    size_r, size_c = min(patch, int(region.height)), min(patch, int(region.width))
    windows = [Window(region.col_off + c, region.row_off + r, size_c, size_r) for r in rows for c in cols]
    if len(windows) > limit:
        windows = [windows[i] for i in np.linspace(0, len(windows) - 1, limit).round().astype(int)]
    return windows


@dataclass
class PatchSource:
    """Reads (pixels, valid, labels) patches of the scene."""

    scene: Scene
    labels: Labels
    bands: tuple[str, ...]
    n_classes: int

    def read(self, window: Window) -> Patch:
        """Pixels (C, H, W), valid (H, W) and int64 targets (H, W): label - 1, :data:`IGNORE` where unusable."""
        pixels, valid = read_window(self.scene, window, self.bands)
        labels = self.labels.read(window)
        usable = valid & (labels >= 1) & (labels <= self.n_classes)
        return pixels, valid, np.where(usable, labels - 1, IGNORE)

    def random(self, region: Window, patch: int, rng: np.random.Generator, tries: int = 10) -> Patch:
        """A random patch inside ``region`` with some labelled pixels (flipped / rotated at random)."""
        for _ in range(tries):
            row = int(region.row_off) + int(rng.integers(0, int(region.height) - patch + 1))
            col = int(region.col_off) + int(rng.integers(0, int(region.width) - patch + 1))
            pixels, valid, target = self.read(Window(col, row, patch, patch))
            if (target != IGNORE).mean() >= 0.01:
                break
        k, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
        pixels, valid, target = (np.rot90(a, k, axes=(-2, -1)) for a in (pixels, valid, target))
        if flip:
            pixels, valid, target = pixels[..., ::-1], valid[..., ::-1], target[..., ::-1]
        return np.ascontiguousarray(pixels), np.ascontiguousarray(valid), np.ascontiguousarray(target)


# --------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainingResult(TrainingMetrics):
    """What ``geoseg train`` reports: the metrics, the time taken and the files written."""

    seconds: float = 0.0
    checkpoint: str = ""
    sidecar: str = ""


def train_unet(
    spec: JobSpec,
    labels: str | Path,
    out: str | Path,
    *,
    classes: list[str] | None = None,
    bands: list[str] | None = None,
    overwrite: bool = False,
    progress: bool = False,
    **settings: Any,
) -> TrainingResult:
    """Train a U-Net on a job's inputs and a label raster; save ``out`` (.pt) and its sidecar (.json).

    Args:
        spec: the job whose ``inputs`` (and AOI) give the pixels.
        labels: single-band raster of class values 1..K (0 = ignore), any grid and CRS.
        out: checkpoint path (``.pt``); the sidecar goes beside it.
        classes: class names for values 1..K; default ``class_1``... up to the largest label.
        bands: bands to train on; default every band of the inputs.
        overwrite: replace an existing checkpoint.
        progress: a bar per epoch on stderr (steps, then the epoch's loss).
        settings: :class:`~geoseg.models.unet.fit.FitSettings` fields: ``epochs``, ``steps_per_epoch``,
            ``batch_size``, ``patch_size``, ``lr`` (Adam, cross-entropy), ``depth``, ``width`` (U-Net size),
            ``device`` ("cpu" or "cuda[:n]", CPU without CUDA), ``seed`` (patch sampling and initialisation).
    """
    from geoseg.models.unet.fit import FitData, FitSettings, fit  # torch

    start = time.perf_counter()
    out = Path(out)
    fit_settings = FitSettings(**settings)
    _check_request(out, fit_settings, overwrite)
    scene = open_job_scene(spec)
    names = tuple(bands or scene.band_names)
    for band in names:
        scene.band(band)
    label_src = open_labels(labels, scene)
    table = class_table(label_src, classes)
    split = split_scene(scene, fit_settings.patch_size)
    mean, std = band_stats(scene, names)
    source = PatchSource(scene, label_src, names, len(table))
    held_out = held_out_windows(split.held_out, fit_settings.patch_size)
    data = FitData(source, split.train, held_out, mean, std, len(table))
    training = {"job": spec.name, "labels": str(labels), "patch_size": fit_settings.patch_size}
    training |= {"lr": fit_settings.lr, "seed": fit_settings.seed}
    sidecar = UNetSidecar(
        bands=list(names), classes=table, depth=fit_settings.depth, width=fit_settings.width, mean=mean, std=std,
        receptive_field=0, training=training,
    )  # fmt: skip
    with EpochProgress(fit_settings.epochs, fit_settings.steps_per_epoch, progress) as bar:
        metrics = fit(data, fit_settings, sidecar, out, overwrite, bar.update)
    seconds = round(time.perf_counter() - start, 2)
    return TrainingResult(**asdict(metrics), seconds=seconds, checkpoint=str(out), sidecar=str(sidecar_path(out)))


class EpochProgress:
    """A progress bar per epoch on stderr (stdout carries the metrics as JSON): its steps, then its mean loss."""

    def __init__(self, epochs: int, steps: int, enabled: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.epochs, self.steps = epochs, steps
        name, loss = TextColumn("{task.description}"), TextColumn("{task.fields[loss]}")
        columns = (name, BarColumn(), MofNCompleteColumn(), loss, TimeElapsedColumn())
        self.bar = Progress(*columns, console=Console(stderr=True), disable=not enabled)
        self.tasks: dict[int, Any] = {}

    def __enter__(self) -> EpochProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)

    def update(self, epoch: int, loss: float | None) -> None:
        """A step of ``epoch`` started (``loss`` None), or the epoch ended with mean ``loss``."""
        if epoch not in self.tasks:
            name = f"epoch {epoch + 1}/{self.epochs}"
            self.tasks[epoch] = self.bar.add_task(name, total=self.steps, loss="")
        if loss is None:
            self.bar.advance(self.tasks[epoch])
        else:
            self.bar.update(self.tasks[epoch], completed=self.steps, loss=f"loss {loss:.4f}")


def _check_request(out: Path, settings: Any, overwrite: bool) -> None:
    for existing in (out, sidecar_path(out)):
        if existing.exists() and not overwrite:
            raise OutputExistsError(f"{existing} exists: pass --overwrite to replace it")
    for name, value in (("epochs", settings.epochs), ("steps", settings.steps_per_epoch)):
        if value < 1:
            raise InputError(f"--{name} must be at least 1, got {value}")
    if settings.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {settings.batch_size}")
    if settings.patch_size < 2**settings.depth:
        raise InputError(
            f"--patch-size {settings.patch_size} is smaller than the U-Net's coarsest pixel ({2**settings.depth} px)"
        )
