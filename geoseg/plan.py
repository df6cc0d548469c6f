"""Planning a job: the scene grid, the tiles to run, what the models need. No pixels are read but for SAM's
scene-wide stretch (a decimated overview)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import shapely
from rasterio.windows import bounds as window_bounds

from geoseg.errors import InputError, SpecError
from geoseg.export import vector_format_path
from geoseg.models import ModelInfo, StatsRole, model_info
from geoseg.models.base import SceneInfo
from geoseg.models.table import preflight as models_preflight
from geoseg.models.table import stats_role, stretch_bands
from geoseg.raster import Scene, open_scene, scene_percentiles
from geoseg.spec import AoiSpec, JobSpec, halo_problem
from geoseg.tiling import Tile, TileGrid

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
    work_dir: Path
    """Per-tile results (``--resume``): ``output.work_dir``, default ``<output>.work/`` beside the GeoPackage."""

    def files(self) -> list[Path]:
        """Every file the job will write (not the work dir)."""
        return [self.geopackage, *self.masks.values(), *self.vectors]


def output_paths(spec: JobSpec) -> OutputPaths:
    """The paths a spec's job writes."""
    out = Path(spec.output.path)
    names = [m.name for m in spec.models]
    masks = {name: out.with_name(f"{out.stem}_{name}.tif") for name in names} if spec.output.masks else {}
    layers = [*names, TILES_LAYER]
    vectors = tuple(vector_format_path(out, name, fmt) for fmt in spec.output.formats for name in layers)
    work_dir = Path(spec.output.work_dir) if spec.output.work_dir else out.with_suffix(".work")
    return OutputPaths(out, masks, vectors, work_dir)


@dataclass(frozen=True)
class JobPlan:
    """Everything the run needs, fixed before any tile runs."""

    spec: JobSpec
    scene: Scene
    grid: TileGrid
    tiles: tuple[Tile, ...]
    """Tiles to run: those whose core touches the AOI (all, without one)."""
    models: tuple[ModelInfo, ...]
    bands: tuple[str, ...]
    """Bands read per tile: the union of what the models need, in first-use order."""
    scene_info: SceneInfo
    """What the models may know of the whole scene (with scene-wide percentiles for the bands some stretch)."""
    stats: StatsRole | None
    """The model whose outputs give the other layers per-object statistics, if any."""
    outputs: OutputPaths

    def band_indices(self, info: ModelInfo) -> list[int]:
        return [self.bands.index(b) for b in info.bands]


def load_aoi(aoi: AoiSpec) -> tuple[shapely.Geometry, str]:
    """The AOI as one geometry and its CRS."""
    if aoi.wkt is not None:
        try:
            return shapely.from_wkt(aoi.wkt), aoi.crs
        except shapely.errors.GEOSException as err:
            raise InputError(f"aoi.wkt is not valid WKT: {err}") from None
    try:
        frame = gpd.read_file(aoi.path, layer=aoi.layer)
    except Exception as err:  # pyogrio raises several types for unreadable files
        raise InputError(f"cannot read aoi.path {aoi.path}: {err}") from None
    if frame.empty or frame.crs is None:
        raise InputError(f"aoi.path {aoi.path} has no features or no CRS")
    return shapely.union_all(frame.geometry.values), frame.crs.to_wkt()


def open_job_scene(spec: JobSpec) -> Scene:
    """The job's scene: its inputs on one grid, masked to its AOI if it has one."""
    aoi, aoi_crs = load_aoi(spec.aoi) if spec.aoi else (None, None)
    return open_scene(spec.inputs, aoi, aoi_crs)


def model_infos(spec: JobSpec) -> tuple[ModelInfo, ...]:
    """The models' infos, checked against the spec: known variants, readable sidecars, a halo that covers them."""
    infos = tuple(model_info(m) for m in spec.models)
    for info in infos:
        problem = halo_problem(spec.tiling.halo, info.name, info.receptive_field)
        if problem:
            raise SpecError(problem)
    return infos


def plan_job(spec: JobSpec, with_stats: bool = True) -> JobPlan:
    """Open the scene, lay the grid, pick the tiles, collect model needs.

    Args:
        with_stats: compute the scene-wide percentiles some models need (a decimated read of the scene).
    """
    infos = model_infos(spec)
    scene = open_job_scene(spec)
    grid = TileGrid(scene.width, scene.height, spec.tiling.tile_size, spec.tiling.halo)
    tiles = tuple(_tiles_in_aoi(grid, scene))
    bands: list[str] = []
    for info in infos:
        for band in info.bands:
            scene.band(band)  # a clear error for a band the band map lacks
            if band not in bands:
                bands.append(band)
    stretch = stretch_bands(spec.models) if with_stats else ()
    scene_info = SceneInfo(
        band_names=tuple(bands),
        crs_wkt=scene.crs_wkt,
        pixel_size=scene.pixel_size,
        pixel_area_m2=scene.pixel_area_m2,
        percentiles=scene_percentiles(scene, stretch) if stretch else {},
    )
    return JobPlan(
        spec, scene, grid, tiles, infos, tuple(bands), scene_info, stats_role(spec.models), output_paths(spec)
    )


def _tiles_in_aoi(grid: TileGrid, scene: Scene) -> list[Tile]:
    if scene.aoi is None:
        return list(grid)
    prepared = scene.aoi
    shapely.prepare(prepared)
    return [t for t in grid if prepared.intersects(shapely.box(*window_bounds(t.core, scene.transform)))]


def preflight(plan: JobPlan) -> None:
    """Fail fast, before Ray starts, on what would make every tile fail (missing weights)."""
    models_preflight(plan.spec.models)


def describe(plan: JobPlan) -> str:
    """Human summary for ``geoseg plan``: grid, tiles, expected memory."""
    s, g = plan.scene, plan.grid
    read_px = g.read_size**2
    per_tile_mb = read_px * (4 * len(plan.bands) + 1 + 8 * len(plan.models)) / 2**20
    in_flight = plan.spec.compute.in_flight
    crs = s.crs.to_string()
    return "\n".join(
        [
            f"job          {plan.spec.name}",
            f"scene        {s.width} x {s.height} px, {s.pixel_size[0]:g} x {s.pixel_size[1]:g} {crs}",
            f"bands        {', '.join(plan.bands)}",
            f"grid         {g.shape[0]} x {g.shape[1]} tiles of {g.tile_size} px + {g.halo} px halo",
            f"tiles        {len(plan.tiles)} to run" + (" (AOI)" if s.aoi is not None else ""),
            f"models       {', '.join(f'{m.name} ({m.kind})' for m in plan.models)}",
            f"memory       ~{per_tile_mb:.0f} MB per tile in flight, {in_flight} in flight: "
            f"~{per_tile_mb * in_flight:.0f} MB of tile data",
            f"output       {plan.spec.output.path}",
        ]
    )
