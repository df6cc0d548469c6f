"""Every output path of a job in one place, and the checks that nothing is clobbered before any work starts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from geoseg.atomic import check_output_absent
from geoseg.errors import OutputError
from geoseg.models import ModelInfo
from geoseg.spec.job import JobSpec

if TYPE_CHECKING:
    from geoseg.plan.job import JobPlan


TILES_LAYER = "tiles"
"""The tile index layer (beside one layer per model)."""


@dataclass(frozen=True)
class OutputPaths:
    """Where a job writes: every path, decided once by the plan."""

    geopackage: Path
    masks: dict[str, Path]
    """Model name -> its mask COG (empty when ``output.masks`` is off)."""
    vectors: tuple[Path, ...]
    """Extra vector formats (GeoParquet, FlatGeobuf), one file per layer and format."""
    fiboa: dict[str, Path]
    """Instance layer -> its fiboa GeoParquet (empty unless ``formats`` holds ``fiboa``)."""
    quicklook_png: Path | None
    quicklook_html: Path | None
    work_dir: Path
    """Per-tile results (``--resume``): ``output.work_dir``, default ``<output stem>.work/`` beside the GeoPackage."""

    def files(self) -> list[Path]:
        """Every file the job will write (not the work dir)."""
        looks = [p for p in (self.quicklook_png, self.quicklook_html) if p is not None]
        return [self.geopackage, *looks, *self.masks.values(), *self.vectors, *self.fiboa.values()]


def output_paths(spec: JobSpec, models: tuple[ModelInfo, ...]) -> OutputPaths:
    """The paths a job writes."""
    out, options = Path(spec.output.path), spec.output
    names = [m.name for m in models]
    masks = {name: out.with_name(f"{out.stem}_{name}.tif") for name in names} if options.masks else {}
    formats = [fmt for fmt in options.formats if fmt != "fiboa"]
    vectors = tuple(vector_format_path(out, name, fmt) for fmt in formats for name in [*names, TILES_LAYER])
    fiboa = (
        {m.name: fiboa_path(out, m.name) for m in models if m.kind == "instance"} if "fiboa" in options.formats else {}
    )
    look = out.with_name(f"{out.stem}_quicklook")
    png = look.with_suffix(".png") if options.quicklook else None
    page = look.with_suffix(".html") if options.quicklook_html else None
    work_dir = Path(options.work_dir) if options.work_dir else out.with_suffix(".work")
    return OutputPaths(out, masks, vectors, fiboa, png, page, work_dir)


JOB_TABLE = "job"
"""The job metadata table (key / value rows)."""


VECTOR_FORMATS: Mapping[str, tuple[str, str]] = {
    "parquet": ("parquet", "GeoParquet"),
    "fgb": ("fgb", "FlatGeobuf"),
}
"""Extra vector formats: name in the spec -> (file suffix, description)."""


# --------------------------------------------------------------------------------------------- other formats
def vector_format_path(gpkg_path: Path, layer: str, fmt: str) -> Path:
    """Where :func:`write_vector_formats` puts ``layer`` in ``fmt``: ``<stem>_<layer>.<suffix>``."""
    if fmt not in VECTOR_FORMATS:
        raise ValueError(f"unknown vector format {fmt!r}; choose from {sorted(VECTOR_FORMATS)}")
    gpkg_path = Path(gpkg_path)
    return gpkg_path.with_name(f"{gpkg_path.stem}_{layer}.{VECTOR_FORMATS[fmt][0]}")


def fiboa_path(gpkg_path: Path, layer: str) -> Path:
    """``<stem>_<layer>.fiboa.parquet`` beside the GeoPackage."""
    return gpkg_path.with_name(f"{gpkg_path.stem}_{layer}.fiboa.parquet")


@dataclass(frozen=True)
class Cleaning:
    """Polygon clean-up settings (from the spec's output section)."""

    simplify: float = 0.0
    """Tolerance in map units; shared edges stay shared."""
    min_area_m2: float = 0.0
    fill_holes_m2: float = 0.0
    """Fill interior rings smaller than this (instance layers only: zones tile the plane)."""
    max_area_m2: float | None = None
    max_edge_masked: float | None = None
    """Drop objects whose outline borders masked pixels over at least this share (with per-object statistics)."""


def check_outputs(plan: JobPlan, overwrite: bool) -> None:
    """Fail before any work when an output exists and ``--overwrite`` was not given, or its folder is unusable."""
    for path in plan.outputs.files():
        check_output_absent(path, overwrite)
    if plan.spec.output.crs:
        from pyproj import CRS
        from pyproj.exceptions import CRSError

        try:
            CRS.from_user_input(plan.spec.output.crs)
        except CRSError:
            raise OutputError(
                f"output.crs {plan.spec.output.crs!r} is not a known CRS: use an EPSG code, e.g. EPSG:4326"
            ) from None
    for folder in {plan.outputs.geopackage.parent, plan.outputs.work_dir.parent}:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"cannot create output folder {folder}: {err.strerror}; change output.path") from None
        if not os.access(folder, os.W_OK):
            raise OutputError(f"output folder {folder} is not writable; change output.path")


def layer_cleaning(plan: JobPlan, info: ModelInfo) -> Cleaning:
    """How a model's stitched objects are cleaned and filtered on export."""
    # a model's own area limits (SAM's min/max_area_m2) apply to whole stitched objects, with output.min_area_m2
    out = plan.spec.output
    min_area = max(out.min_area_m2, info.min_area_m2)
    edge = out.max_edge_masked if info.kind == "instance" else None
    return Cleaning(out.simplify, min_area, out.fill_holes_m2, max_area_m2=info.max_area_m2, max_edge_masked=edge)
