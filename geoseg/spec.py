"""Job specs: typed, validated, normalised once at load time.

A job spec is a YAML file; :func:`load_spec` turns it into a :class:`JobSpec` whose relative paths are resolved
against the spec's folder. Unknown keys are errors everywhere (``extra="forbid"``). ``geoseg schema`` prints
:func:`json_schema` for editors.
"""

from __future__ import annotations

import copy
import glob
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AwareDatetime, Field, ValidationError, field_validator, model_validator

from geoseg.errors import SpecError
from geoseg.spec_product import (
    CropHealthPercentiles,
    QualityMaskSpec,
    StacAssetRef,
    StrictModel,
    VerdictRules,
)

Resampling = Literal["nearest", "bilinear", "cubic", "average", "mode"]


# --------------------------------------------------------------------------------------------- inputs
class BandRef(StrictModel):
    """One named band: a band index in one file, or in each of several files that together cover the region."""

    path: str | list[str] = Field(description="File, glob, or list of files (a mosaic in one CRS).")
    band: int = Field(1, ge=1, description="1-based band index inside each file.")


class InputSpec(StrictModel):
    """Where the pixels come from and how they become one stack on one grid."""

    bands: dict[str, BandRef] | None = Field(
        None, description="Band name -> file + band index; files may differ in resolution and extent."
    )
    files: str | list[str] | None = Field(
        None, description="Multi-band files (paths or globs) covering the region; name bands with band_names."
    )
    band_names: list[str] | None = Field(None, description="Names of the bands of `files`, in file order.")
    stac: str | None = Field(None, description="A STAC Item (file or URL) whose assets are the bands; see assets.")
    assets: dict[str, str | StacAssetRef] | None = Field(
        None, description="With stac: band name -> asset key (or {asset, band}), e.g. {red: B04, nir: B08}."
    )
    nodata: float | None = Field(None, description="Nodata value; default: each file's own nodata.")
    scale: float = Field(1.0, description="Reflectance = DN * scale + offset (Sentinel-2 L1C: 0.0001).")
    offset: float = 0.0
    resolution: float | None = Field(None, gt=0, description="Output pixel size; default: the finest input.")
    crs: str | None = Field(None, description="Scene CRS; default: the CRS of the finest input.")
    resampling: Resampling = "bilinear"
    mask: QualityMaskSpec | None = Field(None, description="Cloud / quality mask: masked pixels are invalid.")
    datetime: AwareDatetime | None = Field(
        None, description="Acquisition time of the imagery, e.g. 2024-06-01T10:30:00Z (fiboa determination:datetime)."
    )

    @model_validator(mode="after")
    def _one_form(self) -> InputSpec:
        if sum(form is not None for form in (self.bands, self.files, self.stac)) != 1:
            raise ValueError("give exactly one of inputs.bands (band name -> file), inputs.files or inputs.stac")
        if (self.stac is None) != (self.assets is None):
            raise ValueError("inputs.stac and inputs.assets go together: assets maps band names to the item's assets")
        if self.mask is not None and self.mask.asset is not None and self.stac is None:
            raise ValueError("inputs.mask.asset needs inputs.stac; give inputs.mask.path for a file")
        if self.files is not None and not self.band_names:
            raise ValueError("inputs.files needs inputs.band_names, e.g. [red, green, blue, nir]")
        if self.bands is not None and self.band_names:
            raise ValueError("inputs.band_names goes with inputs.files; with inputs.bands the keys are the names")
        return self


class AoiSpec(StrictModel):
    """Area of interest: a vector file, or WKT in a given CRS. Only tiles that touch it are processed."""

    path: str | None = None
    layer: str | None = None
    wkt: str | None = None
    crs: str = "EPSG:4326"

    @model_validator(mode="after")
    def _one_form(self) -> AoiSpec:
        if (self.path is None) == (self.wkt is None):
            raise ValueError("give exactly one of aoi.path or aoi.wkt")
        return self


class TilingSpec(StrictModel):
    """Tile grid: each tile owns a core of tile_size² pixels and reads a halo around it."""

    tile_size: int = Field(512, ge=32, le=8192)
    halo: int = Field(32, ge=1, le=1024, description="Overlap read on each side; >= the models' receptive field.")


# --------------------------------------------------------------------------------------------- models
class CropHealthThresholds(StrictModel):
    """Upper bounds of the health classes on the classifying index (ascending)."""

    non_vegetation: float = 0.25
    stressed: float = 0.45
    moderate: float = 0.65

    @model_validator(mode="after")
    def _ascending(self) -> CropHealthThresholds:
        if not self.non_vegetation < self.stressed < self.moderate:
            raise ValueError("crop-health thresholds must ascend: non_vegetation < stressed < moderate")
        return self


VegetationIndex = Literal["ndvi", "ndre", "evi", "savi", "gndvi", "ndmi"]


class CropHealthSpec(StrictModel):
    """Spectral crop health: vegetation indices -> health classes. No weights needed."""

    type: Literal["crop_health"]
    name: str = "crop_health"
    indices: list[VegetationIndex] = Field(default=["ndvi"])
    classify_by: VegetationIndex = "ndvi"
    classes_by: Literal["thresholds", "percentiles"] = Field(
        "thresholds", description="Health classes by absolute index thresholds or scene-relative percentiles."
    )
    thresholds: CropHealthThresholds = CropHealthThresholds()
    percentiles: CropHealthPercentiles = CropHealthPercentiles()
    verdict: VerdictRules = VerdictRules()
    smoothing_px: int = Field(
        1, ge=0, le=16, description="Majority filter radius on the classes (0: per-pixel classes)."
    )

    @property
    def receptive_field(self) -> int:
        return self.smoothing_px

    @property
    def all_indices(self) -> list[VegetationIndex]:
        """The indices computed: the classifying one first, then the others, each once."""
        return list(dict.fromkeys([self.classify_by, *self.indices]))


class FieldRegionsSpec(StrictModel):
    """Classical field segmenter (no weights): vegetated regions split along thin boundaries.

    Pixels with ``index >= threshold`` are eroded by ``erode_px`` to cut the thin strips between fields,
    labelled into connected regions, then grown back inside the vegetation mask.
    """

    type: Literal["field_regions"]
    name: str = "fields"
    index: VegetationIndex = "ndvi"
    threshold: float = 0.5
    erode_px: int = Field(1, ge=0, le=16)

    @property
    def receptive_field(self) -> int:
        return 2 * self.erode_px


class FieldDelineatorSpec(StrictModel):
    """Field delineator (no weights): multi-band regions, then a documented field / not-field rule per region.

    See :mod:`geoseg.models.field_delineator` for the rules; every threshold below is in reflectance (or index)
    units and works on Sentinel-2 and Landsat 8 top-of-atmosphere reflectance without editing.
    """

    type: Literal["field_delineator"]
    name: str = "fields"
    use_swir: bool = Field(True, description="Read swir16 (Sentinel-2 B11, Landsat 8 B6); false: visible rule only.")
    smoothing_sigma: float = Field(1.0, ge=0, le=4, description="Gaussian smoothing (px) before gradients.")
    edge_threshold: float = Field(
        0.01, gt=0, description="Multi-band gradient (reflectance per px) below which a pixel may seed a field."
    )
    seed_erode_px: int = Field(1, ge=0, le=8, description="Erosion of seed areas: cuts leaks through gaps.")
    min_seed_px: int = Field(20, ge=1, description="Smaller seed areas are dropped (their pixels join neighbours).")
    water_ndwi: float = Field(0.0, description="Pixels with NDWI (green - NIR) above this are water.")
    bare_ndvi_min: float = Field(0.08, description="Pixels with NDVI below this are sand, roofs, roads or water.")
    swir_min: float = Field(0.15, description="Pixels darker in SWIR are woods, marsh or water (with use_swir).")
    visible_min: float = Field(
        0.068, description="Without SWIR: pixels with mean(green, red) below this are woods, marsh or water."
    )
    texture_max: float = Field(
        0.12, gt=0, description="Pixels whose NIR std / mean (3 x 3) is above this are woods, town or a hedge."
    )
    region_texture_max: float = Field(0.08, gt=0, description="Regions with a mean texture above this are dropped.")
    merge_min_agreement: float = Field(
        0.3, ge=0, le=1, description="Share of a shared tile edge two fragments must agree on to be merged."
    )

    @property
    def bands(self) -> tuple[str, ...]:
        """Bands it reads, in channel order."""
        return ("green", "red", "nir", "swir16") if self.use_swir else ("green", "red", "nir")

    @property
    def receptive_field(self) -> int:
        """Halo it asks for: its local steps (smoothing, gradient, texture, erosion) plus room for the watershed
        and region rule to see a field's surroundings (24 px), so that tile sizes agree."""
        return int(4 * self.smoothing_sigma) + 3 + self.seed_erode_px + 24


class SamSpec(StrictModel):
    """Segment Anything, automatic or prompted by points/boxes from a vector layer."""

    type: Literal["sam"]
    name: str = "objects"
    variant: str = Field(
        "vit_b", description="vit_b, vit_l or vit_h (or a variant registered at runtime); checked by the plan."
    )
    checkpoint: str | None = Field(None, description="Local .pth path; default: the verified cached download.")
    mode: Literal["automatic", "prompted"] = "automatic"
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU.")
    rgb: tuple[str, str, str] = ("red", "green", "blue")
    stretch_percentiles: tuple[float, float] = Field(
        (2.0, 98.0), description="Scene-wide percentiles mapped to 0 and 255 when the rgb bands become uint8."
    )
    prompts: str | None = Field(None, description="Vector file of points and/or polygons (boxes) for prompted mode.")
    prompts_layer: str | None = None
    # automatic mask generator parameters (segment-anything's names)
    points_per_side: int = Field(32, ge=1)
    points_per_batch: int = Field(64, ge=1)
    pred_iou_thresh: float = Field(0.88, ge=0, le=1)
    stability_score_thresh: float = Field(0.95, ge=0, le=1)
    stability_score_offset: float = 1.0
    box_nms_thresh: float = Field(0.7, ge=0, le=1)
    crop_n_layers: int = Field(0, ge=0)
    crop_nms_thresh: float = Field(0.7, ge=0, le=1)
    crop_overlap_ratio: float = Field(512 / 1500, ge=0, lt=1)
    crop_n_points_downscale_factor: int = Field(1, ge=1)
    min_mask_region_area: int = Field(0, ge=0)
    # geospatial extras
    min_area_m2: float = Field(0.0, ge=0, description="Drop objects smaller than this (whole, after stitching).")
    max_area_m2: float | None = Field(None, gt=0, description="Drop objects larger than this (whole, after stitching).")
    merge_min_agreement: float = Field(
        0.5, ge=0, le=1, description="Share of a shared tile edge two fragments must agree on to be merged."
    )

    @field_validator("stretch_percentiles")
    @classmethod
    def _ascending_percentiles(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= value[0] < value[1] <= 100:
            raise ValueError(f"stretch_percentiles must satisfy 0 <= low < high <= 100, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _prompts_for_prompted(self) -> SamSpec:
        if self.mode == "prompted" and not self.prompts:
            raise ValueError("sam mode 'prompted' needs `prompts:` (a vector file of points or boxes)")
        return self


class UNetSpec(StrictModel):
    """A trained U-Net (``geoseg train``): per-pixel classes and class probabilities from its checkpoint."""

    type: Literal["unet"]
    name: str = "landcover"
    checkpoint: str = Field(
        description="Trained .pt file; its sidecar .json (bands, classes, receptive field) sits beside it."
    )
    merge: Literal["core", "mean", "linear"] = Field(
        "linear", description="Overlapping tiles: core = each tile's own pixels; mean / linear = blended scores."
    )


ModelSpec = Annotated[
    CropHealthSpec | FieldRegionsSpec | FieldDelineatorSpec | SamSpec | UNetSpec, Field(discriminator="type")
]


# --------------------------------------------------------------------------------------------- output, compute
class OutputSpec(StrictModel):
    """Where results go and how polygons are cleaned."""

    path: str = Field(description="GeoPackage path (.gpkg).")
    masks: bool = Field(True, description="Also write one mask COG per model next to the GeoPackage.")
    crs: str | None = Field(None, description="Output CRS of vector layers; default: the scene CRS.")
    formats: list[Literal["parquet", "fgb", "fiboa"]] = Field(
        default_factory=list,
        description="Extra vector formats written beside the GeoPackage; fiboa: the instance layers as fiboa "
        "GeoParquet (<name>_<layer>.fiboa.parquet).",
    )
    quicklook: bool = Field(True, description="Write <name>_quicklook.png: false colour, fields by verdict.")
    quicklook_html: bool = Field(False, description="Also write <name>_quicklook.html (self-contained map).")
    simplify: float = Field(0.0, ge=0, description="Simplify tolerance in map units (0: exact pixel edges).")
    min_area_m2: float = Field(0.0, ge=0, description="Drop polygons smaller than this.")
    fill_holes_m2: float = Field(0.0, ge=0, description="Fill holes smaller than this.")
    work_dir: str | None = Field(None, description="Per-tile results (resume); default: <output>.work/")

    @field_validator("path")
    @classmethod
    def _gpkg(cls, value: str) -> str:
        if not value.lower().endswith(".gpkg"):
            raise ValueError(f"output.path must end in .gpkg, got {value!r}")
        return value


class ComputeSpec(StrictModel):
    """Where and how wide the job runs."""

    address: str | None = Field(None, description="Ray address; null = embedded local Ray.")
    num_cpus: int | None = Field(None, ge=1, description="CPUs for the embedded Ray; default: all.")
    actors: int = Field(1, ge=1, description="Model actors (each loads the models once).")
    gpus_per_actor: float = Field(0.0, ge=0, description="0 = CPU; fractions share a GPU between actors.")
    device: Literal["auto", "gpu", "cpu"] = Field(
        "auto",
        description="auto: GPU actors if the cluster has GPUs when the job starts, else CPU; gpu: request "
        "gpus_per_actor and wait for them (autoscaling) up to gpu_wait_s, never fall back; cpu: CPU actors.",
    )
    gpu_wait_s: float = Field(600.0, gt=0, description="With device gpu: how long to wait for the GPUs.")
    batch_size: int = Field(4, ge=1, description="Tiles per model call.")
    max_in_flight: int | None = Field(None, ge=1, description="Tiles in flight; default: 2 batches per actor.")
    max_retries: int = Field(2, ge=0, description="Retries of a failing tile before it is reported failed.")
    max_failed_tiles: int | None = Field(
        None, ge=0, description="Stop the job (exit code 3) once more tiles than this failed; default: never."
    )
    object_store_mb: int = Field(512, ge=64)

    @model_validator(mode="after")
    def _gpu_share(self) -> ComputeSpec:
        if self.device == "gpu" and self.gpus_per_actor == 0:
            raise ValueError("compute.device 'gpu' needs compute.gpus_per_actor > 0 (e.g. 1, or 0.5 to share)")
        return self

    @property
    def in_flight(self) -> int:
        """Tiles allowed between submission and result: ``max_in_flight``, or two batches per actor."""
        return self.max_in_flight or 2 * self.batch_size * self.actors


class JobSpec(StrictModel):
    """A whole job: inputs, optional AOI, tiling, models, output, compute."""

    name: str = "job"
    inputs: InputSpec
    aoi: AoiSpec | None = None
    tiling: TilingSpec = TilingSpec()
    models: list[ModelSpec] = Field(min_length=1)
    output: OutputSpec
    compute: ComputeSpec = ComputeSpec()

    @model_validator(mode="after")
    def _unique_names(self) -> JobSpec:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique (they name the output layers): {names}")
        return self

    @model_validator(mode="after")
    def _halo_covers_models(self) -> JobSpec:
        """Models whose reach the spec alone tells (a checkpoint's reach is checked by the plan)."""
        for model in self.models:
            problem = halo_problem(self.tiling.halo, model.name, getattr(model, "receptive_field", 0))
            if problem:
                raise ValueError(problem)
        return self


def halo_problem(halo: int, model: str, receptive_field: int) -> str | None:
    """What to change when a halo is smaller than a model's receptive field, or None."""
    if halo >= receptive_field:
        return None
    return (
        f"tiling.halo {halo} is smaller than model {model!r} sees ({receptive_field} px): "
        f"raise tiling.halo to at least {receptive_field}"
    )


# --------------------------------------------------------------------------------------------- loading
def _absolute(path: str, base: Path) -> str:
    if "://" in path or path.startswith("/vsi"):
        return path
    p = Path(path).expanduser()
    return os.path.normpath(p if p.is_absolute() else (base / p))


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make every file path in the raw spec absolute, relative to the spec's folder."""
    inputs = raw.get("inputs")
    if isinstance(inputs, dict):
        if isinstance(inputs.get("stac"), str):
            inputs["stac"] = _absolute(inputs["stac"], base)
        if isinstance(inputs.get("files"), str):
            inputs["files"] = [inputs["files"]]
        if isinstance(inputs.get("files"), list):
            inputs["files"] = [_absolute(p, base) for p in inputs["files"]]
        for ref in (inputs.get("bands") or {}).values():
            if isinstance(ref, dict) and isinstance(ref.get("path"), str):
                ref["path"] = _absolute(ref["path"], base)
            elif isinstance(ref, dict) and isinstance(ref.get("path"), list):
                ref["path"] = [_absolute(p, base) for p in ref["path"]]
        mask = inputs.get("mask")
        if isinstance(mask, dict) and isinstance(mask.get("path"), str):
            mask["path"] = _absolute(mask["path"], base)
        elif isinstance(mask, dict) and isinstance(mask.get("path"), list):
            mask["path"] = [_absolute(p, base) for p in mask["path"]]
    for section, key in (("aoi", "path"), ("output", "path"), ("output", "work_dir")):
        part = raw.get(section)
        if isinstance(part, dict) and isinstance(part.get(key), str):
            part[key] = _absolute(part[key], base)
    for model in raw.get("models") or []:
        for key in ("checkpoint", "prompts"):
            if isinstance(model, dict) and isinstance(model.get(key), str):
                model[key] = _absolute(model[key], base)
    return raw


def _format_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "spec"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key (check spelling; see `geoseg schema`)"
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {where}: {message}{more}"


def parse_spec(raw: Any, base: Path = Path("."), source: str = "spec") -> JobSpec:
    """Validate an already-parsed spec mapping; relative paths resolve against ``base``."""
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: a job spec must be a YAML mapping, got {type(raw).__name__}")
    try:
        return JobSpec.model_validate(_resolve_paths(raw, base.resolve()))
    except ValidationError as err:
        raise SpecError(_format_validation_error(err, source)) from None


def read_spec_yaml(path: str | Path) -> Any:
    """The parsed YAML of a spec file, not yet validated (``yaml.safe_load``: a spec never executes code)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise SpecError(f"cannot read job spec {path}: {err.strerror or err}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}".replace("\n", " ")) from None


def load_spec(path: str | Path) -> JobSpec:
    """Read and validate a YAML job spec."""
    path = Path(path)
    return parse_spec(read_spec_yaml(path), path.parent, str(path))


_RELATIVE_MARKER = "/geoseg-relative-base/"
_RELATIVE_BASE = Path(_RELATIVE_MARKER).joinpath(*["d"] * 64)  # deep enough for any "../"


def relative_paths(raw: Any, source: str = "spec") -> list[tuple[str, str]]:
    """Validate a raw spec and list its relative paths as (key, path) pairs, e.g. ("inputs.bands.red.path", ...).

    Found by resolving the spec against a marker folder: whatever lands under it was relative, so every path key
    the spec knows is covered. URIs and ``/vsi...`` paths are not relative.
    """
    spec = parse_spec(copy.deepcopy(raw), _RELATIVE_BASE, source)
    found: list[tuple[str, str]] = []

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                walk(item, f"{key}.{name}" if key else str(name))
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(item, f"{key}.{i}")
        elif isinstance(value, str) and value.startswith(_RELATIVE_MARKER):
            found.append((key, os.path.relpath(value, _RELATIVE_BASE)))

    walk(spec.model_dump(), "")
    return found


def expand_paths(path: str | list[str]) -> list[str]:
    """Expand globs in one path or a list; keeps order, drops duplicates, errors on a pattern that matches nothing."""
    patterns = [path] if isinstance(path, str) else list(path)
    found: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise SpecError(f"no file matches {pattern!r}: fix the path in inputs")
        found.extend(m for m in matches if m not in found)
    return found


def json_schema() -> str:
    """JSON Schema of the job spec, for editors."""
    return json.dumps(JobSpec.model_json_schema(), indent=2)
