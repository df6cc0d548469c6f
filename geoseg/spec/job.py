"""Job specs: typed, validated, normalised once at load time.

A job spec is a YAML file; :func:`load_spec` turns it into a :class:`JobSpec` whose relative paths are resolved
against the spec's folder. Unknown keys are errors everywhere (``extra="forbid"``). ``geoseg schema`` prints
:func:`json_schema` for editors.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AwareDatetime, Field, ValidationError, field_validator, model_validator

from geoseg.errors import SpecError
from geoseg.spec.models import (
    DEFAULT_HALO_PX,
    PROMPT_SOURCE_TYPES,
    CropHealthSpec,
    CropHealthThresholds,
    FieldDelineatorSpec,
    FieldRegionsSpec,
    ModelSpec,
    SamSpec,
    UNetSpec,
    VegetationIndex,
    halo_problem,
    models_reach,
    with_job_bands,
)
from geoseg.spec.product import (
    CropHealthPercentiles,
    QualityMaskSpec,
    StacAssetRef,
    StrictModel,
    VerdictRules,
)
from geoseg.spec.search import StacSearchSpec

__all__ = [  # the spec's sections, wherever they are defined
    "AoiSpec", "BandRef", "ComputeSpec", "CropHealthPercentiles", "CropHealthSpec", "CropHealthThresholds",
    "FieldDelineatorSpec", "FieldRegionsSpec", "InputSpec", "JobSpec", "ModelSpec", "OutputSpec",
    "QualityMaskSpec", "SamSpec", "StacAssetRef", "StrictModel", "TilingSpec", "UNetSpec", "VegetationIndex",
    "VerdictRules", "expand_paths", "halo_problem", "json_schema", "load_spec", "parse_spec", "read_spec_yaml",
]  # fmt: skip

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
    stac_search: StacSearchSpec | None = Field(None, description="A STAC API search: one day's items; see assets.")
    assets: dict[str, str | StacAssetRef] | None = Field(
        None, description="With stac / stac_search: band name -> asset key (or {asset, band}), e.g. {red: B04}."
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
        if sum(form is not None for form in (self.bands, self.files, self.stac, self.stac_search)) != 1:
            raise ValueError("give exactly one of inputs.bands (band name -> file), files, stac or stac_search")
        if (self.stac is None and self.stac_search is None) != (self.assets is None):
            raise ValueError("inputs.stac_search or inputs.stac and inputs.assets go together (band name -> asset)")
        if self.mask is not None and self.mask.asset is not None and self.stac is None and self.stac_search is None:
            raise ValueError("inputs.mask.asset needs inputs.stac or stac_search; give inputs.mask.path for a file")
        if self.files is not None and not self.band_names:
            raise ValueError("inputs.files needs inputs.band_names, e.g. [red, green, blue, nir]")
        if self.bands is not None and self.band_names:
            raise ValueError("inputs.band_names goes with inputs.files; with inputs.bands the keys are the names")
        return self

    @property
    def names(self) -> tuple[str, ...] | None:
        """The band names the job declares (band map keys, ``band_names`` or STAC asset names); None if unknown."""
        return next((tuple(names) for names in (self.bands, self.band_names, self.assets) if names), None)


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
    halo: int = Field(
        DEFAULT_HALO_PX,
        ge=1,
        le=1024,
        description=f"Overlap read on each side (px), at least the models' receptive field; default: "
        f"{DEFAULT_HALO_PX} or the farthest any model of the job sees, whichever is larger.",
    )


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
    max_edge_masked: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Drop objects of instance layers whose outline borders masked pixels (clouds, nodata) over "
        "at least this share: slivers between clouds, not fields (needs a crop_health model, whose statistics "
        "count the outline). Unset: they stay, their verdict not_observed.",
    )
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
    actors: int = Field(
        1,
        ge=1,
        description="Model actors (each loads the models once). A job of cheap CPU models only (crop_health) "
        "runs one tile worker per CPU instead.",
    )
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
    tile_timeout_s: float | None = Field(600.0, gt=0, description="Seconds before a tile's hung worker restarts.")

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

    @model_validator(mode="before")
    @classmethod
    def _default_halo(cls, data: Any) -> Any:
        """A spec without ``tiling.halo`` reads as far as its models see (a checkpoint's reach: see the plan)."""
        if not isinstance(data, dict):
            return data
        tiling = data.get("tiling") or {}
        if not isinstance(tiling, dict) or "halo" in tiling:
            return data
        reach = models_reach(data.get("models"))
        if reach is None or reach <= DEFAULT_HALO_PX:
            return data
        return {**data, "tiling": {**tiling, "halo": reach}}

    @model_validator(mode="after")
    def _bands_decide(self) -> JobSpec:
        """Models that read an optional band (the field delineator's swir16) read it when the job has it."""
        if self.inputs.names is not None:  # frozen: the resolved specs replace the given ones
            object.__setattr__(self, "models", with_job_bands(self.models, self.inputs.names))
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> JobSpec:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique (they name the output layers): {names}")
        return self

    @model_validator(mode="after")
    def _prompt_sources(self) -> JobSpec:
        """``prompts_from`` names another instance model of the job that takes no prompts from a model itself."""
        by_name = {m.name: m for m in self.models}
        for model in self.models:
            source_name = getattr(model, "prompts_from", None)
            if source_name is None:
                continue
            source = by_name.get(source_name)
            if source is None or source is model:
                others = sorted(n for n in by_name if n != model.name)
                raise ValueError(f"model {model.name!r}: prompts_from {source_name!r} is not another model of this "
                                 f"job; use one of {others}")  # fmt: skip
            if source.type not in PROMPT_SOURCE_TYPES or getattr(source, "prompts_from", None):
                raise ValueError(
                    f"model {model.name!r}: prompts_from {source_name!r} must be an instance model "
                    f"({', '.join(PROMPT_SOURCE_TYPES)}) that takes no prompts_from itself"
                )
        return self

    @model_validator(mode="after")
    def _halo_covers_models(self) -> JobSpec:
        """Models whose reach the spec alone tells (a checkpoint's reach is checked by the plan)."""
        for model in self.models:
            problem = halo_problem(self.tiling.halo, model.name, getattr(model, "receptive_field", 0))
            if problem:
                raise ValueError(problem)
        return self


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
        for ref in [*(inputs.get("bands") or {}).values(), inputs.get("mask")]:  # a band or the mask: path or list
            if isinstance(ref, dict) and isinstance(paths := ref.get("path"), str | list):
                ref["path"] = _absolute(paths, base) if isinstance(paths, str) else [_absolute(p, base) for p in paths]
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
    return f"{source}: {where[:ERROR_CHARS]}: {message[:ERROR_CHARS]}{more}"


def parse_spec(raw: Any, base: Path = Path("."), source: str = "spec") -> JobSpec:
    """Validate an already-parsed spec mapping.

    Args:
        raw: The spec as a mapping (``yaml.safe_load`` of a file, or a dict built in code).
        base: The folder relative paths resolve against.
        source: What error messages call the spec.

    Returns:
        The validated spec.

    Raises:
        SpecError: not a mapping, or not a valid spec (the message names the key to change).
    """
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
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError(f"cannot read job spec {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise SpecError(f"{path} is not UTF-8 text (byte {err.start} of it): save the spec as UTF-8") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {str(err)[:ERROR_CHARS]}".replace("\n", " ")) from None


def load_spec(path: str | Path) -> JobSpec:
    """Read and validate a YAML job spec.

    Args:
        path: The ``.yaml`` file; relative paths in it resolve against its folder.

    Returns:
        The validated spec, every path absolute.

    Raises:
        SpecError: missing, not YAML, or not a valid spec (the message names the key to change).
    """
    path = Path(path)
    return parse_spec(read_spec_yaml(path), path.parent, str(path))


ERROR_CHARS = 300
"""Longest part of a spec error quoted from YAML or the spec (a 200k-alias spec must not print megabytes)."""


def expand_paths(path: str | list[str]) -> list[str]:
    """Expand globs in one path or a list; keeps order, drops duplicates, errors on a pattern that matches nothing."""
    patterns = [path] if isinstance(path, str) else list(path)
    found: list[str] = []
    for pattern in patterns:
        literal = not glob.has_magic(pattern) or os.path.exists(pattern)  # `S2 [2024-06]/B02.tif` that exists
        matches = [pattern] if literal else sorted(glob.glob(pattern))
        if not matches:
            raise SpecError(f"no file matches {pattern!r}: fix the path in inputs")
        found.extend(m for m in matches if m not in found)
    return found


def json_schema() -> str:
    """JSON Schema of the job spec, for editors."""
    return json.dumps(JobSpec.model_json_schema(), indent=2)
