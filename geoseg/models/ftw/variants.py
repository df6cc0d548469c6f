"""The published Fields of The World U-Nets: architecture, input and weights of each variant. No torch.

Every variant is ``segmentation_models_pytorch.Unet(encoder_name=ENCODER, encoder_weights=None, in_channels=4 *
WINDOWS, classes=CLASSES)``, fed red, green, blue and NIR (Sentinel-2 B04, B03, B02, B08; TorchGeo's newer enum
says B8A) of each window in turn, planting window first, as digital numbers divided by 3000. Classes: 0 background,
1 field, 2 boundary (3-class variants). Sources, each cited on its entries below:

- TorchGeo ``torchgeo/models/unet.py`` (``Unet_Weights.SENTINEL2_*_FTW``): URL, in_chans 8, num_classes, encoder
  efficientnet-b3, bands, transforms ``Normalize(mean=0, std=3000)``, license. Its files are plain smp state dicts.
  TorchGeo pins each file by the first 8 hex digits of its sha256 in the file name (torchvision's convention; no
  size is published): those digits are what geoseg checks.
- fieldsoftheworld/ftw-baselines ``ftw_tools/inference/model_registry.py`` (URLs, license) and the training configs
  ``configs/release/prue/prue_efnet{3,5,7}*.yaml`` (``model: unet``, ``backbone: efficientnet-b{3,5,7}``,
  ``in_channels: 8``, ``num_classes: 3``): Lightning checkpoints whose ``state_dict`` holds the net under ``model.``
  (``CustomSemanticSegmentationTask.configure_models``) beside the loss' buffers. FTW publishes no digest or size
  for these files; the ones below were recorded by an independent public project that downloads and pins them
  (a Lightning checkpoint registry pinning ``FTW_PRUE_EFNET_B7``, ``FTW_PRUE_EFNET_B3_CCBY`` and
  ``FTW_v1_3_Class_CCBY`` by sha256 and byte size). They could not be checked here (no internet); a file that does
  not hash to them is refused. The other PRUE files (B3, B5, B5-CCBY, B7-CCBY) have no pinned digest anywhere we
  could read, so they are not registered: download one yourself and set ``checkpoint:`` to it with ``variant:``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from geoseg.errors import WeightsError
from geoseg.models.base import ClassInfo
from geoseg.models.pinned import Checkpoint

if TYPE_CHECKING:
    from geoseg.spec.models import FtwSpec

CLASS_NAMES = ("background", "field", "boundary")
"""FTW's class order (ftw-baselines ``model test``: output 1 is field, 2 boundary)."""
DN_DIVISOR = 3000.0
"""FTW's normalisation: Sentinel-2 digital numbers / 3000 (ftw-baselines ``datamodules.preprocess``; TorchGeo
``_ftw_transforms``)."""
CLASS_COLORS = ((0, 0, 0, 0), (60, 170, 60, 255), (230, 200, 40, 255))
WINDOW_BANDS = ("red", "green", "blue", "nir")
"""Channel order within one window (TorchGeo ``_ftw_sentinel2_bands``: B4, B3, B2, B8[A])."""


@dataclass(frozen=True)
class FtwVariant:
    """One published FTW network."""

    name: str
    encoder: str
    """smp encoder name."""
    classes: int
    """2 (background, field) or 3 (background, field, boundary)."""
    windows: int
    """Input windows: 2 (planting, harvest) or 1."""
    layout: Literal["smp", "lightning"]
    """Checkpoint layout: a plain smp ``state_dict`` (TorchGeo), or a Lightning checkpoint with the net under
    ``state_dict["model.*"]`` (ftw-baselines)."""

    @property
    def in_channels(self) -> int:
        return 4 * self.windows


VARIANTS: dict[str, FtwVariant] = {
    v.name: v
    for v in (
        FtwVariant("ftw-2class", "efficientnet-b3", 2, 2, "smp"),
        FtwVariant("ftw-3class", "efficientnet-b3", 3, 2, "smp"),
        FtwVariant("ftw-v1-3class", "efficientnet-b3", 3, 2, "lightning"),
        FtwVariant("ftw-v2-3class-1window", "efficientnet-b3", 3, 1, "lightning"),
        FtwVariant("prue-b3", "efficientnet-b3", 3, 2, "lightning"),
        FtwVariant("prue-b5", "efficientnet-b5", 3, 2, "lightning"),
        FtwVariant("prue-b7", "efficientnet-b7", 3, 2, "lightning"),
    )
}
"""Variant name -> architecture; ``variant:`` of an ``ftw`` spec."""

_TG = "https://huggingface.co/torchgeo/ftw/resolve/d2fdab6ea9d9cd38b491292cc9a5c8642533cef5"
_GH = "https://github.com/fieldsoftheworld/ftw-baselines/releases/download"

FTW_CHECKPOINTS: tuple[Checkpoint, ...] = (
    # TorchGeo torchgeo/models/unet.py, Unet_Weights.SENTINEL2_{2,3}CLASS_FTW and SENTINEL2_{2,3}CLASS_NC_FTW
    Checkpoint("ftw-2class", "ftw-2class", f"{_TG}/commercial/2-class/sentinel2_unet_effb3-9c04b7c6.pth",
               "9c04b7c6", None, "CC-BY-4.0", "ftw"),
    Checkpoint("ftw-3class", "ftw-3class", f"{_TG}/commercial/3-class/sentinel2_unet_effb3-5d591cbb.pth",
               "5d591cbb", None, "CC-BY-4.0", "ftw"),
    Checkpoint("ftw-2class-nc", "ftw-2class", f"{_TG}/noncommercial/2-class/sentinel2_unet_effb3-bf010a31.pth",
               "bf010a31", None, "non-commercial", "ftw"),
    Checkpoint("ftw-3class-nc", "ftw-3class", f"{_TG}/noncommercial/3-class/sentinel2_unet_effb3-ed36f465.pth",
               "ed36f465", None, "non-commercial", "ftw"),
    # ftw-baselines model_registry.py FTW_v1_3_Class_CCBY / FTW_PRUE_EFNET_B7; the v3.1 CC-BY B3 file
    # (configs/release/prue/prue_efnet3-ccby.yaml); digests and sizes: see the module docstring
    Checkpoint("ftw-v1-3class-ccby", "ftw-v1-3class", f"{_GH}/v1/3_Class_CCBY_FTW_Pretrained.ckpt",
               "d04671c498c181a2bca4b9c1a82fb8dcc93384eaf55841cb6672692f6fb21d3c", 204471122, "CC-BY-4.0", "ftw"),
    Checkpoint("prue-b3-ccby", "prue-b3", f"{_GH}/v3.1/prue_efnetb3_ccby_checkpoint.ckpt",
               "cd51f020168e66ddd1eff501e81da347b39632af34bebf19a6a20d6c73c5a6d4", 53242827, "CC-BY-4.0", "ftw"),
    Checkpoint("prue-b7", "prue-b7", f"{_GH}/v3/prue_efnet7_checkpoint.ckpt",
               "2b1b34a17b85b8f70da6ff737529743b6bc6049e987bce5a1fcdd7279eb3b120", 270119641,
               "mixed (incl. CC-BY-NC-SA)", "ftw"),
)  # fmt: skip
"""Registered downloads of the FTW variants."""


def ftw_variant(name: str) -> FtwVariant:
    """The variant called ``name``; a one-line error naming the known ones."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise WeightsError(f"unknown ftw variant {name!r}: choose one of {', '.join(VARIANTS)}") from None


def ftw_classes(variant: FtwVariant) -> tuple[ClassInfo, ...]:
    """The classes of ``output: classes``: values 1..K for FTW's 0..K-1 (0 stays nodata)."""
    return tuple(ClassInfo(i + 1, CLASS_NAMES[i], CLASS_COLORS[i]) for i in range(variant.classes))


def ftw_bands(spec: FtwSpec) -> tuple[str, ...]:
    """The job bands an ``ftw`` spec reads, each once, in first-use order."""
    return tuple(dict.fromkeys(band for window in spec.windows for band in window))
