"""The published Delineate Anything models: architecture, input and weights of each. No torch, no ultralytics.

Delineate Anything (Lavreniuk et al., https://github.com/Lavreniuk/Delineate-Anything) is an ultralytics YOLO11
instance-segmentation net with one class, ``field``, trained on FBIS-22M (0.25-10 m imagery). Sources:

- TorchGeo ``torchgeo/models/yolo.py`` (``YOLO_Weights.DELINEATE_ANYTHING`` / ``_SMALL``): URLs, ``model``
  ``yolo11x-seg`` / ``yolo11n-seg``, in_chans 3 (R, G, B), num_classes 1, input 512 x 512, license AGPL-3.0;
  TorchGeo pins each file by the first 8 hex digits of its sha256 in the file name (torchvision's convention), which
  is what geoseg checks (no size is published).
- fieldsoftheworld/ftw-baselines ``ftw_tools/models/delineate_anything.py``: the input, RGB digital numbers
  / 3000 clipped to [0, 1] for Sentinel-2 (geoseg: ``dn_per_unit``); conf 0.05, IoU 0.3 as defaults.

The files are ultralytics checkpoints: a pickled ``SegmentationModel`` under ``"model"``. geoseg reads them with
``torch.load(weights_only=True)`` and an allow-list of the architecture's own classes
(:mod:`geoseg.models.delineate_anything.network`), so no other code in the pickle can run.
"""

from __future__ import annotations

from dataclasses import dataclass

from geoseg.errors import WeightsError
from geoseg.models.pinned import Checkpoint


@dataclass(frozen=True)
class DaVariant:
    """One published Delineate Anything network."""

    name: str
    config: str
    """ultralytics model yaml whose scale it is (``yolo11n-seg.yaml`` = YOLO11 seg at scale n)."""


VARIANTS: dict[str, DaVariant] = {
    v.name: v
    for v in (DaVariant("DelineateAnything-S", "yolo11n-seg.yaml"), DaVariant("DelineateAnything", "yolo11x-seg.yaml"))
}
"""Variant name -> architecture; ``variant:`` of a ``delineate_anything`` spec."""

_HF = "https://hf.co/torchgeo"

DA_CHECKPOINTS: tuple[Checkpoint, ...] = (
    # TorchGeo torchgeo/models/yolo.py YOLO_Weights.DELINEATE_ANYTHING_SMALL / DELINEATE_ANYTHING
    Checkpoint("DelineateAnything-S", "DelineateAnything-S",
               f"{_HF}/delineate-anything-s/resolve/69cd440b0c5bd450ced145e68294aa9393ddae05/"
               "delineate_anything_s_rgb_yolo11n-b879d643.pt", "b879d643", None, "AGPL-3.0", "delineate_anything"),
    Checkpoint("DelineateAnything", "DelineateAnything",
               f"{_HF}/delineate-anything/resolve/60bea7b2f81568d16d5c75e4b5b06289e1d7efaf/"
               "delineate_anything_rgb_yolo11x-88ede029.pt", "88ede029", None, "AGPL-3.0", "delineate_anything"),
)  # fmt: skip
"""Registered downloads of the Delineate Anything variants."""


def da_variant(name: str) -> DaVariant:
    """The variant called ``name``; a one-line error naming the known ones."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise WeightsError(
            f"unknown delineate_anything variant {name!r}: choose one of {', '.join(VARIANTS)}"
        ) from None
