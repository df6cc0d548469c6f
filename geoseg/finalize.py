"""After the tiles: stitched objects -> layers, mask COGs, tile index and job metadata -> one export."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from pyproj import CRS
from rasterio.windows import bounds as window_bounds

import geoseg
from geoseg.atomic import check_output_absent
from geoseg.cog import CogWriter
from geoseg.errors import OutputError
from geoseg.export import reproject_layers, write_geopackage, write_vector_formats
from geoseg.fiboa import write_fiboa
from geoseg.models import ModelInfo
from geoseg.plan import TILES_LAYER, JobPlan
from geoseg.stitch import LayerStitcher, StitchedObject
from geoseg.styles import categorized_qml, outline_qml
from geoseg.tileloop import TileStatus
from geoseg.timings import JobTimings
from geoseg.vectorize import Cleaning, objects_frame
from geoseg.verdict import VERDICT_COLORS, VERDICTS
from geoseg.workdir import load_core

MASK_CACHE_MB = 128
"""GDAL block cache while writing masks: keeps memory flat whatever the scene size."""
JOB_TABLE = "job"


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote."""

    geopackage: Path
    layers: dict[str, int]
    """Layer name -> feature count."""
    masks: list[Path]
    extra: list[Path]
    """GeoParquet / FlatGeobuf files."""


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


def build_layers(
    plan: JobPlan, stitchers: dict[str, LayerStitcher]
) -> tuple[dict[str, gpd.GeoDataFrame], dict[str, list[StitchedObject]]]:
    """One GeoDataFrame per model (scene CRS), and the stitched objects behind it."""
    out = plan.spec.output
    crs = CRS.from_wkt(plan.scene.crs_wkt)
    layers, objects = {}, {}
    for info in plan.models:
        # a model's own area limits (SAM's min/max_area_m2) apply to whole stitched objects, with output.min_area_m2
        min_area = max(out.min_area_m2, info.min_area_m2)
        cleaning = Cleaning(out.simplify, min_area, out.fill_holes_m2, max_area_m2=info.max_area_m2)
        objects[info.name] = stitchers[info.name].objects()
        layers[info.name] = objects_frame(
            objects[info.name],
            plan.scene.transform,
            crs,
            cleaning,
            classes=info.classes,
            stats_classes=plan.stats.classes if plan.stats else (),
            instance=info.kind == "instance",
            verdict_rules=plan.stats.verdict if plan.stats else None,
        )
    return layers, objects


def tiles_layer(plan: JobPlan, status: dict[str, TileStatus]) -> gpd.GeoDataFrame:
    """The tile index: core footprints with status, attempts, timings and errors."""
    rows = []
    for tile in plan.tiles:
        s = status[tile.id]
        rows.append(
            {
                "tile_id": tile.id,
                "row": tile.row,
                "col": tile.col,
                "status": s.status,
                "attempts": s.attempts,
                "read_s": round(s.seconds.read, 4),
                "model_s": round(s.seconds.model, 4),
                "finish_s": round(s.seconds.finish, 4),
                "error": s.error,
                "geometry": shapely.box(*window_bounds(tile.core, plan.scene.transform)),
            }
        )
    return gpd.GeoDataFrame(rows, geometry="geometry", crs=plan.scene.crs_wkt)


def job_table(plan: JobPlan, meta: dict[str, Any]) -> pd.DataFrame:
    """Job metadata as key/value rows."""
    values = {
        "job": plan.spec.name,
        "geoseg_version": geoseg.__version__,
        "python": platform.python_version(),
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "scene_crs": CRS.from_wkt(plan.scene.crs_wkt).to_string(),
        "scene_size": f"{plan.scene.width}x{plan.scene.height}",
        "tiles": str(len(plan.tiles)),
        "spec": json.dumps(plan.spec.model_dump(mode="json")),
        **{k: str(v) for k, v in meta.items()},
    }
    return pd.DataFrame({"key": list(values), "value": list(values.values())})


def layer_style(info: ModelInfo, verdicts: bool = False) -> str:
    """QGIS style: classes filled; instances outlined, in their verdict's colour when they have one."""
    if info.kind == "semantic":
        return categorized_qml("class", [(c.value, c.name, c.color) for c in info.classes])
    if verdicts:
        return categorized_qml("verdict", [(v, v, VERDICT_COLORS[v]) for v in VERDICTS], outline_only=True)
    return outline_qml((255, 220, 0, 255), 0.5)


def write_masks(
    plan: JobPlan, objects: dict[str, list[StitchedObject]], kept: dict[str, set[int]], overwrite: bool
) -> list[Path]:
    """One COG per model, written window by window from the tiles' saved cores."""
    written = []
    with rasterio.Env(GDAL_CACHEMAX=MASK_CACHE_MB):
        for info in plan.models:
            written.append(_write_mask(plan, info, objects, kept, overwrite))
    return written


def _write_mask(
    plan: JobPlan, info: ModelInfo, objects: dict[str, list[StitchedObject]], kept: dict[str, set[int]], overwrite: bool
) -> Path:
    """One model's COG: classes (uint8, colour table) or global instance ids (uint32)."""
    semantic = info.kind == "semantic"
    luts = {} if semantic else _id_luts(objects[info.name], kept[info.name])
    path = plan.outputs.masks[info.name]
    writer = CogWriter(
        path,
        width=plan.scene.width,
        height=plan.scene.height,
        transform=plan.scene.transform,
        crs=plan.scene.crs_wkt,
        dtype="uint8" if semantic else "uint32",
        nodata=0,
        colormap={c.value: c.color for c in info.classes} if semantic else None,
        overwrite=overwrite,
        overview_resampling="mode" if semantic else "nearest",
        band_description=info.name,
    )
    with writer:
        for tile in plan.tiles:
            core = load_core(plan.outputs.work_dir, tile.id, info.name)
            if core is None:
                continue  # failed tile: left as nodata
            if not semantic:
                lut = luts.get(tile.id, np.zeros(1, np.uint32))
                core = lut[np.clip(core, 0, len(lut) - 1)]
            writer.write(core, tile.core)
    return path


def _id_luts(objects: list[StitchedObject], kept: set[int]) -> dict[str, np.ndarray]:
    """Per tile, local label -> global id (0 for objects dropped by cleaning)."""
    pairs: dict[str, dict[int, int]] = {}
    for obj in objects:
        for tile_id, label in obj.fragments:
            pairs.setdefault(tile_id, {})[label] = obj.id if obj.id in kept else 0
    luts = {}
    for tile_id, mapping in pairs.items():
        lut = np.zeros(max(mapping) + 1, np.uint32)
        lut[list(mapping)] = list(mapping.values())
        luts[tile_id] = lut
    return luts


def export(
    plan: JobPlan,
    stitchers: dict[str, LayerStitcher],
    status: dict[str, TileStatus],
    meta: dict[str, Any],
    overwrite: bool,
    timings: JobTimings | None = None,
) -> ExportSummary:
    """Write everything; returns what was written (``timings``: the run's stage seconds, for the job table)."""
    timings = timings or JobTimings()
    with timings.stage("objects"):
        layers, objects = build_layers(plan, stitchers)
    masks = []
    if plan.spec.output.masks:
        with timings.stage("masks"):
            masks = write_masks(plan, objects, {k: set(v["id"]) for k, v in layers.items()}, overwrite)
    meta = {**meta, **timings.rows()}
    looks = write_quicklooks(plan, layers, overwrite)
    layers[TILES_LAYER] = tiles_layer(plan, status)
    if plan.spec.output.crs:
        layers = reproject_layers(layers, plan.spec.output.crs)
    styles = {info.name: layer_style(info, "verdict" in layers[info.name]) for info in plan.models}
    styles[TILES_LAYER] = outline_qml((120, 120, 120, 255), 0.3)
    out = plan.outputs.geopackage
    write_geopackage(out, layers, tables={JOB_TABLE: job_table(plan, meta)}, styles=styles, overwrite=overwrite)
    formats = [f for f in plan.spec.output.formats if f != "fiboa"]
    extra = write_vector_formats(out, layers, formats, overwrite) if formats else []
    if "fiboa" in plan.spec.output.formats:
        extra += [
            write_fiboa(layers[name], path, plan.spec.name, plan.scene.datetime, overwrite)
            for name, path in plan.outputs.fiboa.items()
        ]
    summary = {name: len(gdf) for name, gdf in layers.items()}
    return ExportSummary(out, summary, masks, [*extra, *looks])


def write_quicklooks(plan: JobPlan, layers: dict[str, gpd.GeoDataFrame], overwrite: bool) -> list[Path]:
    """The quicklook PNG (and HTML) of the instance layers, from a decimated read of the scene."""
    png, page = plan.outputs.quicklook_png, plan.outputs.quicklook_html
    if png is None and page is None:
        return []
    from geoseg.quicklook import render, write_html, write_png

    outlined = {info.name: layers[info.name] for info in plan.models if info.kind == "instance"}
    canvas = render(plan.scene, outlined, plan.spec.name)
    written = [write_png(canvas, png, overwrite)] if png is not None else []
    if page is not None:
        written.append(write_html(canvas, outlined, page, plan.spec.name, overwrite))
    return written
