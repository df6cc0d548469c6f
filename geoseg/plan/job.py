"""Planning a job: the scene grid, the tiles to run, what the models need, and the inputs checked once, up front
(CRS, common extent, valid pixels). Pixels are read only from decimated overviews (the valid-pixel check, SAM's
scene-wide stretch)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds

from geoseg.errors import InputError, SpecError
from geoseg.inputs.scene import Scene, open_scene, read_decimated, read_window, scene_percentiles
from geoseg.inputs.tiles import Tile, TileGrid
from geoseg.inputs.validity import check_levels, check_valid_pixels
from geoseg.models import ModelInfo, StatsRole, model_info
from geoseg.models.base import SceneInfo
from geoseg.models.crop_health.catalog import bands_for, index_array
from geoseg.models.table import checkpoint_files, scene_indices, stats_role, stretch_bands
from geoseg.plan.outputs import OutputPaths, output_paths
from geoseg.spec.job import AoiSpec, JobSpec, halo_problem

log = logging.getLogger(__name__)

DIGITAL_NUMBERS = (
    "inputs are digital numbers, not reflectance (integer data, no inputs.scale): the field delineator and crop "
    "health use scene-relative levels"
)
"""Said once in the log and in the job table when the inputs have no units."""


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


def load_aoi(aoi: AoiSpec) -> tuple[shapely.Geometry, str]:
    """The AOI as one geometry and its CRS."""
    if aoi.wkt is not None:
        try:
            return area_of_interest(shapely.from_wkt(aoi.wkt), "aoi.wkt"), aoi.crs
        except shapely.errors.GEOSException as err:
            raise InputError(f"aoi.wkt is not valid WKT: {err}") from None
    try:
        frame = gpd.read_file(aoi.path, layer=aoi.layer)
    except Exception as err:  # pyogrio raises several types for unreadable files
        raise InputError(f"cannot read aoi.path {aoi.path}: {err}") from None
    if frame.empty or frame.crs is None:
        raise InputError(f"aoi.path {aoi.path} has no features or no CRS")
    return area_of_interest(frame.geometry.values, f"aoi.path {aoi.path}"), frame.crs.to_wkt()


def area_of_interest(geometries: Any, source: str) -> shapely.Geometry:
    """The polygonal area of one geometry or an array of them: invalid ones (a bow-tie) repaired with
    ``make_valid`` (a warning says so), points and lines left out.

    Raises:
        InputError: nothing with an area is left.
    """
    geoms = np.atleast_1d(np.asarray(geometries, dtype=object))
    geoms = geoms[~shapely.is_missing(geoms)]
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        log.warning("%s: %s; repaired (shapely.make_valid)", source, shapely.is_valid_reason(geoms[invalid][0]))
        geoms = shapely.make_valid(geoms)
    parts = shapely.get_parts(shapely.get_parts(geoms))  # collections -> their members
    polygons = parts[shapely.area(parts) > 0] if len(parts) else parts
    if not len(polygons):
        raise InputError(f"{source} has no area (a point, a line or an empty polygon): give a polygon")
    return shapely.union_all(polygons)


def open_job_scene(spec: JobSpec) -> Scene:
    """The job's scene: its inputs on one grid, masked to its AOI if it has one."""
    aoi, aoi_crs = load_aoi(spec.aoi) if spec.aoi else (None, None)
    return open_scene(spec.inputs, aoi, aoi_crs)


def model_infos(spec: JobSpec) -> tuple[ModelInfo, ...]:
    """The models' infos, checked against the spec: known variants, readable sidecars, a halo that covers them,
    and (where the spec names its bands) every band a model reads.

    Raises:
        SpecError: what to change in the spec.
    """
    infos = tuple(model_info(m) for m in spec.models)
    names = spec.inputs.names
    for info in infos:
        problem = halo_problem(spec.tiling.halo, info.name, info.receptive_field)
        if problem:
            raise SpecError(problem)
        missing = [band for band in info.bands if names is not None and band not in names]
        if missing:
            raise SpecError(
                f"model {info.name!r} reads band(s) {', '.join(map(repr, missing))}, which inputs do not name "
                f"(have: {', '.join(names or ())}): add them to inputs or choose a model that needs fewer bands"
            )
    return infos


def is_reflectance(scene: Scene) -> bool:
    """False when the inputs are digital numbers with no units: no scale or offset and integer files."""
    if scene.scale != 1.0 or scene.offset != 0.0:
        return True
    paths = dict.fromkeys(p for band in scene.bands for p in band.paths)
    for path in paths:
        with rasterio.open(path) as src:
            if any(np.issubdtype(np.dtype(d), np.floating) for d in src.dtypes):
                return True
    return False


def plan_job(spec: JobSpec, with_stats: bool = True) -> JobPlan:
    """Open the scene, lay the grid, pick the tiles, collect model needs; nothing runs.

    Args:
        spec: The job.
        with_stats: compute the scene-wide percentiles some models need (a decimated read of the scene).

    Returns:
        The plan: scene, tile grid, tiles to run, model infos, output paths.

    Raises:
        InputError: the inputs cannot be read, do not overlap, or hold no valid pixel.
        SpecError: the spec asks for something the inputs or models cannot give (a band, a halo).
    """
    infos = model_infos(spec)
    scene = open_job_scene(spec)
    # a core larger than the scene only pads: clamped (tile_size 8192 on a 768 px scene reads 768 px + halo)
    tile_size = min(spec.tiling.tile_size, max(scene.width, scene.height, MIN_TILE_PX))
    grid = TileGrid(scene.width, scene.height, tile_size, spec.tiling.halo)
    tiles = tuple(_tiles_in_aoi(grid, scene))
    bands: list[str] = []
    for info in infos:
        for band in info.bands:
            scene.band(band)  # a clear error for a band the band map lacks
            if band not in bands:
                bands.append(band)
    check_valid_pixels(scene, tuple(bands))
    tiles = tuple(tiles_with_data(grid, scene, list(tiles), tuple(bands)))
    reflectance = is_reflectance(scene)
    levels = check_levels(scene, tuple(bands))  # raises on a scale that cannot be right, whatever the units
    if levels and reflectance:  # inputs without units get the one DIGITAL_NUMBERS line, not "set inputs.scale"
        log.warning(levels)
    stretch = stretch_bands(spec.models) if with_stats else ()
    relative = scene_indices(spec.models) if with_stats else ()
    if not reflectance and with_stats:
        log.warning(DIGITAL_NUMBERS)
    scene_info = SceneInfo(
        band_names=tuple(bands),
        crs_wkt=scene.crs_wkt,
        pixel_size=scene.pixel_size,
        pixel_area_m2=scene.pixel_area_m2,
        percentiles=scene_percentiles(scene, stretch) if stretch else {},
        index_percentiles=index_percentiles(scene, relative) if relative else {},
        reflectance=reflectance,
    )
    return JobPlan(
        spec, scene, grid, tiles, infos, tuple(bands), scene_info, stats_role(spec.models), output_paths(spec, infos)
    )


def index_percentiles(scene: Scene, indices: tuple[str, ...], max_size: int = 1024) -> dict[str, np.ndarray]:
    """Percentiles 0..100 of vegetation indices over a decimated whole-scene read (masked pixels left out)."""
    needed = bands_for(indices)
    pixels, valid = read_decimated(scene, needed, max_size)
    bands = {name: pixels[i] for i, name in enumerate(needed)}
    out = {}
    for name in indices:
        values = index_array(name, bands)[valid]
        values = values[~np.isnan(values)]
        if not values.size:
            raise InputError(f"no valid {name} pixels in the scene for scene-relative crop-health classes")
        out[name] = np.percentile(values, np.arange(101))
    return out


EMPTY_CHECK_TILES = 256
"""Jobs of more tiles than this skip the tiles an overview finds empty; smaller ones read every tile (cheap, and
nothing the overview's sampling could miss is lost)."""


def tiles_with_data(grid: TileGrid, scene: Scene, tiles: list[Tile], bands: tuple[str, ...], px: int = 8) -> list[Tile]:
    """The tiles whose core holds a valid pixel (every band has data, inside the AOI, not masked) in a decimated
    read of ``px`` x ``px`` pixels per tile (one row of tiles at a time), one overview pixel around each core
    included; the others are skipped without being read in full. Valid areas narrower than a tile / ``px`` may go
    unseen, hence only for jobs of more than :data:`EMPTY_CHECK_TILES` tiles, where it matters."""
    if len(tiles) <= EMPTY_CHECK_TILES:
        return tiles
    rows_of: dict[int, list[Tile]] = {}
    for tile in tiles:
        rows_of.setdefault(tile.row, []).append(tile)
    keep: list[Tile] = []
    step = grid.tile_size / px  # scene pixels per overview pixel
    for row, in_row in sorted(rows_of.items()):
        top = row * grid.tile_size
        height = min(grid.tile_size, scene.height - top)
        out = (max(1, round(height / step)), max(1, round(scene.width / step)))
        try:
            valid = read_window(scene, Window(0, top, scene.width, height), bands, out_shape=out)[1]
        except InputError:  # unreadable blocks: the tiles find out themselves
            keep += in_row
            continue
        columns = np.asarray(valid.any(axis=0))  # per overview column: any valid pixel in the row's height
        for tile in in_row:
            c0, c1 = int(tile.core.col_off / step) - 1, int(np.ceil((tile.core.col_off + tile.core.width) / step)) + 1
            if columns[max(0, c0) : c1].any():
                keep.append(tile)
    if len(keep) < len(tiles):
        log.info("%d of %d tiles hold no valid pixel (overview): skipped", len(tiles) - len(keep), len(tiles))
    return keep


def _tiles_in_aoi(grid: TileGrid, scene: Scene) -> list[Tile]:
    if scene.aoi is None:
        return list(grid)
    prepared = scene.aoi
    shapely.prepare(prepared)
    return [t for t in grid if prepared.intersects(shapely.box(*window_bounds(t.core, scene.transform)))]


def preflight(plan: JobPlan) -> list[Path]:
    """Fail fast, before Ray starts, on what would make every tile fail (missing weights), warn of tiles too large
    for this machine's memory; returns the job's checkpoint files (what ``--resume`` hashes)."""
    warning = check_memory(plan)
    if warning:
        log.warning(warning)
    return checkpoint_files(plan.spec.models)


def input_files(plan: JobPlan) -> list[str]:
    """Every file the tiles' results depend on: the bands' files, the AOI, the prompt layers."""
    files = list(dict.fromkeys(p for band in plan.scene.bands for p in band.paths))
    if plan.spec.aoi is not None and plan.spec.aoi.path:
        files.append(plan.spec.aoi.path)
    files += [info.prompts for info in plan.models if info.prompts]
    return files


MIN_TILE_PX = 32
"""The smallest tile a spec may ask for (``tiling.tile_size``)."""


def tile_memory_mb(plan: JobPlan) -> float:
    """Tile data of one tile in flight, MB: its bands (float32), its mask and its models' rasters."""
    return plan.grid.read_size**2 * (4 * len(plan.bands) + 1 + 8 * len(plan.models)) / 2**20


def machine_memory_mb() -> float:
    """This machine's physical memory, MB."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20


def check_memory(plan: JobPlan) -> str | None:
    """A warning when the tile data in flight alone takes more than half this machine's memory, else None."""
    need, have = tile_memory_mb(plan) * plan.spec.compute.in_flight, machine_memory_mb()
    if need <= have / 2:
        return None
    return (
        f"~{need / 1024:.1f} GB of tile data in flight ({plan.spec.compute.in_flight} tiles of "
        f"{plan.grid.read_size} px) against {have / 1024:.1f} GB on this machine: lower tiling.tile_size, "
        "compute.batch_size or compute.max_in_flight"
    )


def describe(plan: JobPlan) -> str:
    """Human summary for ``geoseg plan``: grid, tiles, expected memory.

    Args:
        plan: A plan from :func:`plan_job`.

    Returns:
        Lines of ``key  value`` text.
    """
    s, g = plan.scene, plan.grid
    per_tile_mb = tile_memory_mb(plan)
    in_flight = plan.spec.compute.in_flight
    crs = s.crs.to_string()
    return "\n".join(
        [
            f"job          {plan.spec.name}",
            *(s.search.describe() if s.search is not None else []),
            f"scene        {s.width} x {s.height} px, {s.pixel_size[0]:g} x {s.pixel_size[1]:g} {crs}",
            f"bands        {', '.join(plan.bands)}"
            + ("" if plan.scene_info.reflectance else " (digital numbers: scene-relative levels)"),
            f"grid         {g.shape[0]} x {g.shape[1]} tiles of {g.tile_size} px + {g.halo} px halo",
            f"tiles        {len(plan.tiles)} to run" + (" (AOI)" if s.aoi is not None else ""),
            f"models       {', '.join(f'{m.name} ({m.kind})' for m in plan.models)}",
            f"memory       ~{per_tile_mb:.0f} MB per tile in flight, {in_flight} in flight: "
            f"~{per_tile_mb * in_flight:.0f} MB of tile data",
            f"output       {plan.spec.output.path}",
        ]
    )
