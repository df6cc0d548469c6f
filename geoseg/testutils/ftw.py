"""Random FTW checkpoints in the publishers' own layouts, for tests and benchmarks (no real weights here).

A freshly initialised U-Net answers almost the same class everywhere, so :func:`random_ftw_state` rescales its last
layer on a sample of real pixels: each class's logit gets zero mean and unit spread there (the field class a bias of
``field_bias``), which turns the random features into a patchwork of fields and boundaries. The weights are still
random: the fields are arbitrary, the tests check how they flow through tiling, stitching and export.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn

from geoseg.models.ftw.network import LIGHTNING_PREFIX, build_ftw_net
from geoseg.models.ftw.variants import FtwVariant


def random_ftw_state(
    variant: FtwVariant, seed: int = 0, sample: np.ndarray | None = None, field_bias: float = 0.8
) -> dict[str, torch.Tensor]:
    """A seeded random state dict of the variant, its head balanced on ``sample`` ((C, H, W) net input) if given."""
    torch.manual_seed(seed)
    net = build_ftw_net(variant).eval()
    if sample is not None:
        head = cast(nn.Conv2d, net.get_submodule("segmentation_head.0"))
        with torch.no_grad():
            logits = net(torch.from_numpy(np.ascontiguousarray(sample, dtype=np.float32))[None])
            mean, std = logits.mean((0, 2, 3)), logits.std((0, 2, 3)).clamp_min(1e-6)
            head.weight /= std[:, None, None, None]
            bias = head.bias
            assert bias is not None
            bias.copy_((bias - mean) / std)
            bias[1] += field_bias
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def write_ftw_checkpoint(path: Path, variant: FtwVariant, state: dict[str, torch.Tensor]) -> Path:
    """Save ``state`` as the publisher ships the variant: TorchGeo's plain smp state dict (``.pth``), or an
    ftw-baselines Lightning checkpoint (the net under ``model.``, the loss' class weights beside it, hyper-parameters
    and trainer bookkeeping as Lightning writes them)."""
    if variant.layout == "smp":
        torch.save(state, path)
        return path
    weights = torch.tensor([0.05, 0.2, 0.75][: variant.classes])
    payload = {
        "epoch": 99,
        "global_step": 12345,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": {**{LIGHTNING_PREFIX + k: v for k, v in state.items()}, "criterion.weight": weights},
        "hyper_parameters": {
            "model": "unet",
            "backbone": variant.encoder,
            "in_channels": variant.in_channels,
            "num_classes": variant.classes,
            "class_weights": weights.tolist(),
            "loss": "logcoshdice",
            "ignore_index": 3,
            "lr": 1e-3,
            "patience": 100,
        },
        "optimizer_states": [],
        "lr_schedulers": [],
    }
    torch.save(payload, path)
    return path
