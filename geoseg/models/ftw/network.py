"""Build a Fields of The World U-Net as published and load its weights in the publisher's layout.

The architecture is ``segmentation_models_pytorch.Unet`` exactly as TorchGeo's ``unet()`` and ftw-baselines'
``CustomSemanticSegmentationTask.configure_models`` build it (``encoder_weights=None``: nothing is downloaded).
Checkpoints are read with ``torch.load(weights_only=True)``; a file whose keys or shapes differ from the variant's
architecture is refused in one line before anything is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import torch
from torch import nn

from geoseg.errors import WeightsError, error_gist
from geoseg.models.ftw.variants import FtwVariant

LIGHTNING_PREFIX = "model."
"""ftw-baselines' Lightning task keeps the net as ``self.model``: its keys start with this."""


def build_ftw_net(variant: FtwVariant) -> nn.Module:
    """The variant's U-Net with random weights (as published: smp Unet, its encoder, no pretrained download)."""
    net: nn.Module = smp.Unet(
        encoder_name=variant.encoder, encoder_weights=None, in_channels=variant.in_channels, classes=variant.classes
    )
    return net


def net_state(payload: Any, variant: FtwVariant, source: str) -> dict[str, torch.Tensor]:
    """The net's own state dict out of a loaded checkpoint in the variant's layout.

    Raises:
        WeightsError: the payload is not a state dict in that layout.
    """
    if variant.layout == "lightning":
        state = payload.get("state_dict") if isinstance(payload, dict) else None
        if not isinstance(state, dict):
            raise WeightsError(
                f"ftw checkpoint {source} is not a Lightning checkpoint (no state_dict): variant {variant.name} "
                f"expects ftw-baselines' .ckpt; pick the variant the file belongs to"
            )
        # the loss' class weights (``criterion.weight``) and other task buffers are not the net's
        return {k[len(LIGHTNING_PREFIX) :]: v for k, v in state.items() if k.startswith(LIGHTNING_PREFIX)}
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise WeightsError(f"ftw checkpoint {source} is not a state dict of tensors (TorchGeo's .pth layout)")
    return dict(payload)


def check_state(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    """Raise a one-line WeightsError when ``state``'s keys or shapes differ from ``expected``'s."""
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if not (missing or extra or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} key(s) missing (first {missing[0]})")
    if extra:
        parts.append(f"{len(extra)} unexpected (first {extra[0]})")
    if shapes:
        k = shapes[0]
        parts.append(
            f"{len(shapes)} shape(s) differ (first {k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)})"
        )
    raise WeightsError(f"{what} does not fit the declared architecture: {'; '.join(parts)}: pick the matching variant")


def load_ftw_net(path: str | Path, variant: FtwVariant) -> nn.Module:
    """Build the variant's net and load a checkpoint file into it (CPU, eval mode).

    Raises:
        WeightsError: the file is missing, not loadable with ``weights_only=True``, or does not fit the variant.
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"ftw checkpoint {path} not found: fix `checkpoint:` in the model spec") from None
    except Exception as err:  # pickle, zip and unsupported-global errors of a damaged or foreign file
        raise WeightsError(
            f"ftw checkpoint {path} cannot be read with torch.load(weights_only=True) ({error_gist(err)})"
        ) from None
    net = build_ftw_net(variant)
    state = net_state(payload, variant, str(path))
    check_state(state, net.state_dict(), f"ftw checkpoint {path} (variant {variant.name})")
    net.load_state_dict(state)
    return net.eval()
