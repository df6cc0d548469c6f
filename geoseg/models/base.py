"""The one small interface every model implements, and the records it returns.

A model receives a batch of read windows (all bands it asked for, float32, invalid pixels flagged) and returns one
output per tile: a class raster (semantic models) or an instance label raster (instance models). Outputs cover the
whole read window; the stitcher keeps what each tile owns. Outputs are compact: one raster per tile, never a stack
of full-size boolean masks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from affine import Affine

from geoseg.inputs.tiles import Tile

if TYPE_CHECKING:
    from geoseg.spec.job import VerdictRules


@dataclass(frozen=True)
class ClassInfo:
    """One class of a semantic model."""

    value: int
    """Pixel value in the class raster (0 is reserved for nodata)."""
    name: str
    color: tuple[int, int, int, int]
    """RGBA used in the COG colour table and the QGIS style."""


@dataclass(frozen=True)
class StatsRole:
    """A model whose output gives per-object statistics to the job's other layers (crop health does)."""

    model: str
    """The model's name (its outputs are the source)."""
    classes: tuple[ClassInfo, ...]
    """Its classes: each object of another layer gets ``share_<class>``."""
    hist_layers: tuple[str, ...] = ()
    """Per-pixel layers whose medians are kept (as histograms); the others get means only."""
    verdict: VerdictRules | None = None
    """Rules of the per-object verdict (:mod:`geoseg.export.verdict`)."""


@dataclass(frozen=True)
class ModelInfo:
    """What the driver needs to know of a model without building it (no weights loaded, no torch)."""

    name: str
    kind: Literal["semantic", "instance"]
    bands: tuple[str, ...]
    classes: tuple[ClassInfo, ...] = ()
    merge_min_agreement: float = 0.0
    prompts: str | None = None
    prompts_layer: str | None = None
    prompts_from: str | None = None
    """Another instance model of the job whose stitched objects prompt this one with their bounding boxes."""
    merge: str = "core"
    """How overlapping tiles combine for a semantic model: ``core``, or a blend from :mod:`geoseg.stitch.blend`."""
    receptive_field: int = 0
    """Halo (px) the model needs so that a tile's core does not depend on the tile size."""
    min_area_m2: float = 0.0
    """Objects of this layer smaller than this are dropped after stitching (on whole objects, not fragments)."""
    max_area_m2: float | None = None
    """Objects of this layer larger than this are dropped after stitching."""


@dataclass(frozen=True)
class SceneInfo:
    """What a model may know about the whole scene; computed once by the driver."""

    band_names: tuple[str, ...]
    crs_wkt: str
    pixel_size: tuple[float, float]
    """(x, y) pixel size in CRS units, both positive."""
    pixel_area_m2: float
    """Area of one pixel in m² (at the scene centre for geographic CRSs)."""
    percentiles: dict[str, np.ndarray] = field(default_factory=dict)
    """Band name -> values at percentiles 0, 1, ..., 100 of valid pixels over a decimated whole-scene read."""
    index_percentiles: dict[str, np.ndarray] = field(default_factory=dict)
    """Vegetation index -> percentiles 0..100 over the same read (scene-relative crop-health classes)."""
    reflectance: bool = True
    """False when the inputs are digital numbers without units (integer data, no scale): models then use levels
    relative to the scene (its ``percentiles``) instead of reflectance thresholds."""


@dataclass(frozen=True)
class Prompts:
    """SAM prompts that fall in one tile's read window, in read-window pixel coordinates (x = column, y = row)."""

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    """(K, 2) point prompts, one mask each."""
    point_keys: tuple[str, ...] = ()
    """A stable id per point (fragments of the same prompt in different tiles merge into one object)."""
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    """(M, 4) box prompts x0, y0, x1, y1."""
    box_keys: tuple[str, ...] = ()
    attrs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Prompt key -> the prompt feature's attributes, carried to the output polygon."""

    def __len__(self) -> int:
        return len(self.points) + len(self.boxes)


@dataclass(frozen=True)
class TileContext:
    """Per-tile information handed to ``predict`` beside the pixels."""

    tile: Tile
    transform: Affine
    """Affine transform of the read window."""
    prompts: Prompts | None = None


@dataclass
class SemanticOutput:
    """A class raster over the read window, plus optional per-pixel layers such as NDVI."""

    classes: np.ndarray
    """uint8 (H, W); 0 = nodata."""
    layers: dict[str, np.ndarray] = field(default_factory=dict)
    """Name -> float32 (H, W), NaN where invalid (e.g. ``{"ndvi": ...}``); used for per-object statistics."""
    scores: np.ndarray | None = None
    """Optional float16/float32 (C, H, W) class probabilities, channel i for ``Model.classes[i]``, all 0 where
    invalid. Models that give them can have overlapping tiles blended (``merge`` other than ``core``)."""


@dataclass
class InstanceInfo:
    """Attributes of one instance in an :class:`InstanceOutput`."""

    label: int
    """Its value in the label raster (> 0)."""
    score: float
    """Model confidence in [0, 1] (SAM: predicted IoU)."""
    stability: float | None = None
    key: str | None = None
    """Identity across tiles (a prompt id): fragments with the same key are one object."""
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class InstanceOutput:
    """Instances over the read window as one label raster (overlaps resolved: higher score wins)."""

    labels: np.ndarray
    """int32 (H, W); 0 = background."""
    instances: list[InstanceInfo] = field(default_factory=list)


ModelOutput = SemanticOutput | InstanceOutput


class Model(ABC):
    """A segmentation model run on batches of tiles inside a model actor."""

    kind: ClassVar[Literal["semantic", "instance"]]
    name: str
    """Output layer name (unique in a job)."""
    bands: tuple[str, ...]
    """Band names it reads, in the order of the channel axis of ``pixels``."""
    classes: tuple[ClassInfo, ...] = ()
    """Classes of a semantic model (value 0 = nodata is implicit)."""
    merge_min_agreement: float = 0.0
    """Instance stitching: share of a shared tile edge on which two fragments must agree to merge; 0 = any
    contact (exact for connected regions, whose halo view agrees with the neighbour's core)."""
    needs_prompts: bool = False

    @abstractmethod
    def predict(self, pixels: np.ndarray, valid: np.ndarray, contexts: list[TileContext]) -> list[ModelOutput]:
        """Segment a batch.

        Args:
            pixels: float32 (N, C, H, W), channels in ``self.bands`` order, reflectance-scaled; 0 where invalid.
            valid: bool (N, H, W), False for nodata, outside the scene or outside the AOI.
            contexts: one per tile.
        """
