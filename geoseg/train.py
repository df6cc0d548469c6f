"""Training a U-Net (:mod:`geoseg.models.unet`) on a job's inputs and a label raster, patch by patch.

The scene is never in memory: random patches are read with :func:`~geoseg.raster.read_window`, their labels with a
nearest-neighbour warp of the label raster onto the patch's grid (any CRS or resolution). Band statistics come from a
decimated whole-scene read. The last strip of the scene (20 % of its longer side) is held out: no training patch
touches it, and pixel accuracy is measured there.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from affine import Affine
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from geoseg.errors import InputError, OutputExistsError
from geoseg.models import resolve_device
from geoseg.models.unet import UNet, autocast, normalise, save_unet
from geoseg.models.unet_meta import PALETTE, receptive_field_for, sidecar_path
from geoseg.raster import Scene, open_scene, read_window
from geoseg.spec import JobSpec

log = logging.getLogger("geoseg")

IGNORE = -100
"""Target value cross-entropy ignores (label 0, nodata, invalid pixels)."""


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


def class_table(labels: Labels, names: list[str] | None) -> list[dict[str, Any]]:
    """Sidecar classes: one per value 1..K, K from ``names`` or the largest label in a decimated read."""
    overview = labels.read(*_overview(labels.scene))
    top = int(overview.max())
    if top < 1:
        raise InputError(f"labels {labels.path} hold no class values 1..K over the scene: check their extent and CRS")
    if names is not None and top > len(names):
        raise InputError(f"labels {labels.path} hold value {top} but --class-names names {len(names)} class(es)")
    names = names or [f"class_{v}" for v in range(1, top + 1)]
    colors = labels.colors()
    return [
        {"value": v, "name": name, "color": list(colors.get(v, PALETTE[(v - 1) % len(PALETTE)]))}
        for v, name in enumerate(names, start=1)
    ]


# --------------------------------------------------------------------------------------------- sampling
def _overview(scene: Scene, max_size: int = 1024) -> tuple[Window, tuple[int, int]]:
    """The whole-scene window and a decimated shape of at most ``max_size`` px a side."""
    factor = max(1.0, max(scene.width, scene.height) / max_size)
    shape = (max(1, round(scene.height / factor)), max(1, round(scene.width / factor)))
    return Window(0, 0, scene.width, scene.height), shape


def band_stats(scene: Scene, bands: tuple[str, ...]) -> tuple[list[float], list[float]]:
    """Per-band mean and std of valid pixels over a decimated whole-scene read."""
    window, shape = _overview(scene)
    pixels, valid = read_window(scene, window, bands, out_shape=shape)
    if not valid.any():
        raise InputError("the inputs hold no valid pixels inside the scene/AOI: check nodata and the AOI")
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

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixels (C, H, W), valid (H, W) and int64 targets (H, W): label - 1, :data:`IGNORE` where unusable."""
        pixels, valid = read_window(self.scene, window, self.bands)
        labels = self.labels.read(window)
        usable = valid & (labels >= 1) & (labels <= self.n_classes)
        return pixels, valid, np.where(usable, labels - 1, IGNORE)

    def random(self, region: Window, patch: int, rng: np.random.Generator, tries: int = 10) -> tuple[np.ndarray, ...]:
        """A random patch inside ``region`` with some labelled pixels (flipped / rotated at random)."""
        for _ in range(tries):
            row = int(region.row_off) + int(rng.integers(0, int(region.height) - patch + 1))
            col = int(region.col_off) + int(rng.integers(0, int(region.width) - patch + 1))
            pixels, valid, target = self.read(Window(col, row, patch, patch))
            if (target != IGNORE).mean() >= 0.01:
                break
        k, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
        out = []
        for a in (pixels, valid, target):
            a = np.rot90(a, k, axes=(-2, -1))
            out.append(np.ascontiguousarray(a[..., ::-1] if flip else a))
        return tuple(out)


def _batch(arrays: list[tuple[np.ndarray, ...]], device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.stack([a[i] for a in arrays])).to(device) for i in range(3))


# --------------------------------------------------------------------------------------------- training
def _evaluate(
    net: UNet, source: PatchSource, windows: list[Window], stats: tuple[torch.Tensor, torch.Tensor], batch: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class (correct, total) pixel counts over the held-out windows."""
    device = next(net.parameters()).device
    correct = np.zeros(source.n_classes, np.int64)
    total = np.zeros(source.n_classes, np.int64)
    net.eval()
    by_size: dict[tuple[int, int], list[tuple[np.ndarray, ...]]] = {}
    for window in windows:
        by_size.setdefault((int(window.height), int(window.width)), []).append(source.read(window))
    with torch.inference_mode():
        for patches in by_size.values():
            for start in range(0, len(patches), batch):
                pixels, valid, target = _batch(patches[start : start + batch], device)
                with autocast(device):
                    logits = net(normalise(pixels, valid, *stats))
                pred, truth = logits.float().argmax(dim=1).cpu().numpy(), target.cpu().numpy()
                keep = truth != IGNORE
                total += np.bincount(truth[keep], minlength=source.n_classes)
                correct += np.bincount(truth[keep & (pred == truth)], minlength=source.n_classes)
    return correct, total


def train_unet(
    spec: JobSpec,
    labels: str | Path,
    out: str | Path,
    *,
    classes: list[str] | None = None,
    bands: list[str] | None = None,
    epochs: int = 5,
    patch_size: int = 128,
    batch_size: int = 8,
    steps_per_epoch: int = 50,
    lr: float = 1e-3,
    device: str = "cpu",
    seed: int = 0,
    depth: int = 3,
    width: int = 16,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train a U-Net on a job's inputs and a label raster; save ``out`` (.pt) and its sidecar (.json).

    Args:
        spec: the job whose ``inputs`` (and AOI) give the pixels.
        labels: single-band raster of class values 1..K (0 = ignore), any grid and CRS.
        out: checkpoint path (``.pt``); the sidecar goes beside it.
        classes: class names for values 1..K; default ``class_1``... up to the largest label.
        bands: bands to train on; default every band of the inputs.
        epochs, steps_per_epoch, batch_size, patch_size, lr: the optimisation (Adam, cross-entropy).
        device: "cpu" or "cuda[:n]" (falls back to CPU without CUDA; bf16 autocast on CUDA).
        seed: seeds patch sampling and initialisation.
        depth, width: U-Net size.
        overwrite: replace an existing checkpoint.

    Returns:
        Metrics: ``train_loss`` (mean over the last epoch), ``val_accuracy`` and per-class accuracy on the held-out
        strip, ``val_pixels``, ``seconds``, ``device``, the paths written.
    """
    start = time.perf_counter()
    out = Path(out)
    for existing in (out, sidecar_path(out)):
        if existing.exists() and not overwrite:
            raise OutputExistsError(f"{existing} exists: pass --overwrite to replace it")
    for name, value in (("epochs", epochs), ("steps", steps_per_epoch), ("batch-size", batch_size)):
        if value < 1:
            raise InputError(f"--{name} must be at least 1, got {value}")
    if patch_size < 2**depth:
        raise InputError(f"--patch-size {patch_size} is smaller than the U-Net's coarsest pixel ({2**depth} px)")
    scene = _open_scene(spec)
    names = tuple(bands or scene.band_names)
    for band in names:
        scene.band(band)
    label_src = open_labels(labels, scene)
    table = class_table(label_src, classes)
    split = split_scene(scene, patch_size)
    mean, std = band_stats(scene, names)
    run_device = torch.device(resolve_device(device))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    source = PatchSource(scene, label_src, names, len(table))
    net = UNet(len(names), len(table), depth, width).to(run_device)
    stats = (torch.tensor(mean, device=run_device), torch.tensor(std, device=run_device))
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    history = []
    for epoch in range(epochs):
        loss = _train_epoch(net, optimiser, source, split.train, patch_size, batch_size, steps_per_epoch, stats, rng)
        history.append(loss)
        log.info("epoch %d/%d: train loss %.4f", epoch + 1, epochs, loss)
    _recalibrate_batch_norm(net, [source.random(split.train, patch_size, rng) for _ in range(4 * batch_size)], stats)
    correct, total = _evaluate(net, source, held_out_windows(split.held_out, patch_size), stats, batch_size)
    per_class = zip(table, correct, total, strict=True)
    metrics: dict[str, Any] = {
        "train_loss": history[-1],
        "loss_history": history,
        "val_accuracy": float(correct.sum() / total.sum()) if total.sum() else None,
        "val_class_accuracy": {c["name"]: float(k / n) if n else None for c, k, n in per_class},
        "val_pixels": int(total.sum()),
        "train_pixels_seen": epochs * steps_per_epoch * batch_size * patch_size**2,
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "device": run_device.type,
    }
    meta = {
        "bands": list(names),
        "classes": table,
        "depth": depth,
        "width": width,
        "mean": mean,
        "std": std,
        "receptive_field": receptive_field_for(depth),
        "training": {"job": spec.name, "labels": str(labels), "patch_size": patch_size, "lr": lr, "seed": seed},
        "metrics": metrics,
    }
    save_unet(out, net, meta, overwrite=overwrite)
    return {**metrics, "seconds": round(time.perf_counter() - start, 2), "checkpoint": str(out),
            "sidecar": str(sidecar_path(out))}  # fmt: skip


def _open_scene(spec: JobSpec) -> Scene:
    if spec.aoi is None:
        return open_scene(spec.inputs)
    from geoseg.plan import load_aoi

    aoi, aoi_crs = load_aoi(spec.aoi)
    return open_scene(spec.inputs, aoi, aoi_crs)


def _recalibrate_batch_norm(
    net: UNet, patches: list[tuple[np.ndarray, ...]], stats: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """Recompute batch-norm running statistics with the final weights (an average over ``patches``).

    The running averages kept during training lag behind weights that moved fast (short runs, high learning
    rates); inference uses them, so they are refreshed once at the end.
    """
    device = next(net.parameters()).device
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    net.train()
    with torch.no_grad():
        for start in range(0, len(patches), 8):
            pixels, valid, _ = _batch(patches[start : start + 8], device)
            with autocast(device):
                net(normalise(pixels, valid, *stats))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    net.eval()


def _train_epoch(
    net: UNet,
    optimiser: torch.optim.Optimizer,
    source: PatchSource,
    region: Window,
    patch: int,
    batch: int,
    steps: int,
    stats: tuple[torch.Tensor, torch.Tensor],
    rng: np.random.Generator,
) -> float:
    """One epoch of random patches; the mean loss of its steps."""
    device = next(net.parameters()).device
    net.train()
    losses = []
    for _ in range(steps):
        pixels, valid, target = _batch([source.random(region, patch, rng) for _ in range(batch)], device)
        if not (target != IGNORE).any():
            continue
        with autocast(device):
            logits = net(normalise(pixels, valid, *stats))
        loss = F.cross_entropy(logits.float(), target, ignore_index=IGNORE)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    if not losses:
        raise InputError("no training patch held labelled pixels: check that the labels overlap the inputs")
    return float(np.mean(losses))
