"""Fitting a U-Net (:class:`~geoseg.models.unet.model.UNet`) on patches: the torch half of ``geoseg train``.

:mod:`geoseg.train` chooses the patches, the classes and the band statistics (no torch); :func:`fit` runs the
optimisation (Adam, cross-entropy, random flips and rotations), refreshes batch-norm statistics, measures held-out
accuracy and saves the checkpoint with its sidecar.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from rasterio.windows import Window

from geoseg.errors import InputError
from geoseg.models import resolve_device
from geoseg.models.unet.meta import IGNORE, Patch, TrainingMetrics, UNetSidecar, receptive_field_for
from geoseg.models.unet.model import UNet, autocast, normalise, save_unet

log = logging.getLogger(__name__)

"""(pixels (C, H, W), valid (H, W), int64 targets (H, W): label - 1, :data:`IGNORE` where unusable)."""


class PatchSampler(Protocol):
    """What :func:`fit` needs of the scene: patches in windows, random patches in a region."""

    def read(self, window: Window) -> Patch:
        """The patch of a window."""

    def random(self, region: Window, patch: int, rng: np.random.Generator) -> Patch:
        """A random patch inside a region (flipped / rotated at random)."""


@dataclass(frozen=True)
class FitSettings:
    """The optimisation and the network's size."""

    epochs: int = 5
    steps_per_epoch: int = 50
    batch_size: int = 8
    patch_size: int = 128
    lr: float = 1e-3
    depth: int = 3
    width: int = 16
    device: str = "cpu"
    seed: int = 0


@dataclass(frozen=True)
class FitData:
    """The data side: a patch source, the training region, the held-out windows, band statistics, classes."""

    source: PatchSampler
    train: Window
    held_out: list[Window]
    mean: list[float]
    std: list[float]
    n_classes: int


StepCallback = Callable[[int, float | None], None]
"""Called as each training step starts with (epoch, None), and after each epoch with (epoch, its mean loss)."""


def fit(
    data: FitData,
    settings: FitSettings,
    sidecar: UNetSidecar,
    out: Path,
    overwrite: bool,
    on_step: StepCallback | None = None,
) -> TrainingMetrics:
    """Train a U-Net, save it to ``out`` with ``sidecar`` (metrics filled in), return the metrics; ``on_step``
    hears of each step and epoch (a progress bar)."""
    run_device = torch.device(resolve_device(settings.device))
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    n_bands = len(data.mean)
    net = UNet(n_bands, data.n_classes, settings.depth, settings.width).to(run_device)
    stats = (torch.tensor(data.mean, device=run_device), torch.tensor(data.std, device=run_device))
    optimiser = torch.optim.Adam(net.parameters(), lr=settings.lr)
    history = []
    for epoch in range(settings.epochs):
        step = None if on_step is None else functools.partial(on_step, epoch, None)
        loss = _train_epoch(net, optimiser, data, settings, stats, rng, step)
        history.append(loss)
        if on_step is not None:
            on_step(epoch, loss)
        log.info("epoch %d/%d: train loss %.4f", epoch + 1, settings.epochs, loss)
    patch, batch = settings.patch_size, settings.batch_size
    _recalibrate_batch_norm(net, [data.source.random(data.train, patch, rng) for _ in range(4 * batch)], stats)
    correct, total = _evaluate(net, data.source, data.held_out, data.n_classes, stats, batch)
    metrics = TrainingMetrics(
        train_loss=history[-1],
        loss_history=history,
        val_accuracy=float(correct.sum() / total.sum()) if total.sum() else None,
        val_class_accuracy={
            c.name: float(k / n) if n else None for c, k, n in zip(sidecar.classes, correct, total, strict=True)
        },
        val_pixels=int(total.sum()),
        train_pixels_seen=settings.epochs * settings.steps_per_epoch * batch * patch**2,
        epochs=settings.epochs,
        steps_per_epoch=settings.steps_per_epoch,
        device=run_device.type,
    )
    sidecar = sidecar.model_copy(
        update={"receptive_field": receptive_field_for(settings.depth), "metrics": metrics.as_dict()}
    )
    save_unet(out, net, sidecar, overwrite=overwrite)
    return metrics


def _batch(arrays: list[Patch], device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.stack([a[i] for a in arrays])).to(device) for i in range(3))


def _evaluate(
    net: UNet,
    source: PatchSampler,
    windows: list[Window],
    n_classes: int,
    stats: tuple[torch.Tensor, torch.Tensor],
    batch: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class (correct, total) pixel counts over the held-out windows."""
    device = next(net.parameters()).device
    correct = np.zeros(n_classes, np.int64)
    total = np.zeros(n_classes, np.int64)
    net.eval()
    by_size: dict[tuple[int, int], list[Patch]] = {}
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
                total += np.bincount(truth[keep], minlength=n_classes)
                correct += np.bincount(truth[keep & (pred == truth)], minlength=n_classes)
    return correct, total


def _recalibrate_batch_norm(net: UNet, patches: list[Patch], stats: tuple[torch.Tensor, torch.Tensor]) -> None:
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
    data: FitData,
    settings: FitSettings,
    stats: tuple[torch.Tensor, torch.Tensor],
    rng: np.random.Generator,
    step: Callable[[], None] | None = None,
) -> float:
    """One epoch of random patches; the mean loss of its steps (``step`` called as each starts)."""
    device = next(net.parameters()).device
    net.train()
    losses = []
    patch, region = settings.patch_size, data.train
    for _ in range(settings.steps_per_epoch):
        pixels, valid, target = _batch(
            [data.source.random(region, patch, rng) for _ in range(settings.batch_size)], device
        )
        if step is not None:
            step()
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
