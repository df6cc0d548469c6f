"""Build a Delineate Anything net (ultralytics YOLO11-seg, one class) and load its weights without running pickles.

Needs the optional extra ``pip install geoseg[delineate-anything]`` (ultralytics, AGPL-3.0). ultralytics is told to
stay offline before it is imported (``YOLO_OFFLINE``; its settings go to a folder of geoseg's cache, not the user's
home): nothing is downloaded, no fonts, no weights, no update checks. The net is built from ultralytics' own model
yaml (``yolo11n-seg.yaml`` etc.) with ``nc=1``: the published architecture with random weights.

The published files are ultralytics checkpoints, a pickled ``SegmentationModel`` under ``"model"``. They are read
with ``torch.load(weights_only=True)``, allowing exactly the classes the architecture is built of (and
ultralytics' plain namespace of training arguments): a pickle that names anything else is refused, so no code in it
runs. The loaded state dict is then checked key by key and shape by shape against the freshly built architecture.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geoseg.errors import WeightsError, error_gist
from geoseg.models.delineate_anything.variants import DaVariant
from geoseg.models.ftw.network import check_state

EXTRA = "pip install 'geoseg[delineate-anything]'"


def _offline() -> None:
    """ultralytics' environment switches, set before its first import: no network, quiet, settings kept aside."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "geoseg-ultralytics"))


def _segmentation_model() -> Any:
    _offline()
    try:
        from ultralytics.nn.tasks import SegmentationModel
    except ImportError:
        raise WeightsError(f"delineate_anything needs ultralytics (AGPL-3.0): {EXTRA}") from None
    return SegmentationModel


def build_da_net(variant: DaVariant) -> nn.Module:
    """The variant's YOLO11-seg net with one class and random weights, in eval mode."""
    net: nn.Module = _segmentation_model()(variant.config, nc=1, verbose=False)
    return net.eval()


def _allowed_globals(net: nn.Module) -> list[Any]:
    from ultralytics.utils import IterableSimpleNamespace

    return [*{type(module) for module in net.modules()}, IterableSimpleNamespace]


def load_da_net(path: str | Path, variant: DaVariant) -> nn.Module:
    """Build the variant's net and load an ultralytics checkpoint into it (CPU, fp32, eval mode).

    Raises:
        WeightsError: ultralytics is missing, or the file is missing, names classes outside the architecture, or
            does not fit it.
    """
    path = Path(path)
    net = build_da_net(variant)
    try:
        with torch.serialization.safe_globals(_allowed_globals(net)):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"delineate_anything checkpoint {path} not found: fix `checkpoint:`") from None
    except Exception as err:  # an unlisted class in the pickle, or a damaged file
        raise WeightsError(
            f"delineate_anything checkpoint {path} cannot be read safely ({error_gist(err)}): "
            f"is it an ultralytics YOLO-seg checkpoint of variant {variant.name}?"
        ) from None
    model = payload.get("ema") or payload.get("model") if isinstance(payload, dict) else payload
    state = model.state_dict() if isinstance(model, nn.Module) else model
    if not isinstance(state, dict):
        raise WeightsError(f"delineate_anything checkpoint {path} holds no model (an ultralytics .pt has 'model')")
    check_state(state, net.state_dict(), f"delineate_anything checkpoint {path} (variant {variant.name})")
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.eval()
