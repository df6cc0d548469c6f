"""After the tiles: stitched objects -> layers, mask COGs, tile index and job metadata -> one export."""

from __future__ import annotations

import contextvars
import json
import platform
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from rasterio.windows import bounds as window_bounds

import geoseg
from geoseg.atomic import atomic_output
from geoseg.export.cog import CogWriter
from geoseg.export.fiboa import write_fiboa
from geoseg.export.quicklook import QuicklookFeed
from geoseg.export.styles import categorized_qml, outline_qml
from geoseg.export.vector import LayerAppender, check_names, fill_geopackage, reproject_layers, write_vector_formats
from geoseg.export.vectorize import objects_frame
from geoseg.export.verdict import VERDICT_COLORS, VERDICTS
from geoseg.models import ModelInfo
from geoseg.plan.job import DIGITAL_NUMBERS, JobPlan
from geoseg.plan.outputs import JOB_TABLE, TILES_LAYER, layer_cleaning
from geoseg.run.timings import JobTimings
from geoseg.run.workdir import TileStatus, load_core
from geoseg.stitch.spool import ObjectSpool
from geoseg.stitch.stitcher import LayerStitcher, StitchedObject

MASK_CACHE_MB = 128
"""GDAL block cache while writing masks: keeps memory flat whatever the scene size."""


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote."""

    geopackage: Path
    layers: dict[str, int]
    """Layer name -> feature count."""
    masks: list[Path]
    extra: list[Path]
    """GeoParquet / FlatGeobuf files."""


EXPORT_BATCH = 20_000
"""Objects per batch when a layer streams from its spool into the GeoPackage."""


def layer_frames(plan: JobPlan, info: ModelInfo, spool: ObjectSpool, batch: int) -> Iterator[LayerBatch]:
    """A model's layer (scene CRS) in id order, one frame per batch of objects, with the objects behind it."""
    cleaning = layer_cleaning(plan, info)
    crs = plan.scene.grid.proj
    if cleaning.simplify > 0:
        batch = max(spool.count, 1)  # coverage simplification keeps shared edges shared: the whole layer at once
    for objects in spool.batches(batch):
        frame = objects_frame(
            objects,
            plan.scene.transform,
            crs,
            cleaning,
            classes=info.classes,
            stats_classes=plan.stats.classes if plan.stats else (),
            instance=info.kind == "instance",
            verdict_rules=plan.stats.verdict if plan.stats else None,
            columns=spool.columns,
        )
        yield LayerBatch(objects, frame)


@dataclass(frozen=True)
class LayerBatch:
    objects: list[StitchedObject]
    frame: gpd.GeoDataFrame


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
        "scene_crs": plan.scene.grid.proj.to_string(),
        "scene_size": f"{plan.scene.width}x{plan.scene.height}",
        "tiles": str(len(plan.tiles)),
        "units": "reflectance" if plan.scene_info.reflectance else DIGITAL_NUMBERS,
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
    plan: JobPlan, spools: dict[str, ObjectSpool], overwrite: bool, models: list[ModelInfo]
) -> dict[str, Path]:
    """One COG per model of ``models`` (model name -> path), written window by window from the tiles' saved cores."""
    with rasterio.Env(GDAL_CACHEMAX=MASK_CACHE_MB):
        return {info.name: _write_mask(plan, info, spools[info.name], overwrite) for info in models}


def _write_mask(plan: JobPlan, info: ModelInfo, spool: ObjectSpool, overwrite: bool) -> Path:
    """One model's COG: classes (uint8, colour table) or global instance ids (uint32)."""
    semantic = info.kind == "semantic"
    path = plan.outputs.masks[info.name]
    writer = CogWriter(
        path,
        plan.scene.grid,
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
                lut = spool.id_lut(tile.id)
                core = lut[np.clip(core, 0, len(lut) - 1)]
            writer.write(core, tile.core)
    return path


def export(
    plan: JobPlan,
    stitchers: dict[str, LayerStitcher],
    status: dict[str, TileStatus],
    meta: dict[str, Any],
    overwrite: bool,
    timings: JobTimings | None = None,
) -> ExportSummary:
    """Write everything, streaming each layer from its spool; returns what was written (``timings``: the run's
    stage seconds, for the job table)."""
    timings = timings or JobTimings()
    spools = {}
    for name, stitcher in stitchers.items():
        stitcher.close()
        if not isinstance(stitcher.sink, ObjectSpool):
            raise TypeError("export needs stitchers that spool their objects (finalize.layer_stitchers)")
        spools[name] = stitcher.sink
    out, spec = plan.outputs.geopackage, plan.spec.output
    names = [*(m.name for m in plan.models), TILES_LAYER]
    check_names(names, [JOB_TABLE], names)
    looks = QuicklookFeed(plan.scene, plan.spec.name, plan.outputs.quicklook_png, plan.outputs.quicklook_html)
    written = LayerSink(plan, bool(spec.formats), looks)
    classes = [m for m in plan.models if m.kind == "semantic"] if spec.masks else []
    ids = [m for m in plan.models if m.kind != "semantic"] if spec.masks else []
    with atomic_output(out, overwrite) as tmp, ThreadPoolExecutor(1, thread_name_prefix="class-masks") as pool:
        # class masks need no object ids: alongside, in this context (their COGs join the output set)
        early = pool.submit(contextvars.copy_context().run, write_masks, plan, spools, overwrite, classes)
        with timings.stage("objects"):
            for info in plan.models:
                written.write(tmp, info, spools[info.name])
        with timings.stage("masks"):
            paths = early.result() | write_masks(plan, spools, overwrite, ids)
        masks = [paths[info.name] for info in plan.models if info.name in paths]
        tiles = written.reproject(tiles_layer(plan, status))
        styles = {info.name: layer_style(info, info.name in written.verdicts) for info in plan.models}
        styles[TILES_LAYER] = outline_qml((120, 120, 120, 255), 0.3)
        tables = {JOB_TABLE: job_table(plan, {**meta, **timings.rows()})}
        fill_geopackage(tmp, {TILES_LAYER: tiles}, tables=tables, styles=styles)
    for spool in spools.values():
        spool.close()
    extra = _extra_formats(plan, {**written.frames, TILES_LAYER: tiles}, overwrite)
    summary = {**written.rows, TILES_LAYER: len(tiles)}
    return ExportSummary(out, summary, masks, [*extra, *looks.write(overwrite)])


def _extra_formats(plan: JobPlan, layers: dict[str, gpd.GeoDataFrame], overwrite: bool) -> list[Path]:
    """GeoParquet / FlatGeobuf / fiboa beside the GeoPackage (from the layers kept whole for them)."""
    formats = [f for f in plan.spec.output.formats if f != "fiboa"]
    extra = write_vector_formats(plan.outputs.geopackage, layers, formats, overwrite) if formats else []
    if "fiboa" in plan.spec.output.formats:
        extra += [
            write_fiboa(layers[name], path, plan.spec.name, plan.scene.datetime, overwrite)
            for name, path in plan.outputs.fiboa.items()
        ]
    return extra


class LayerSink:
    """Writes each model's layer into the GeoPackage being built, batch by batch from its spool, and feeds what
    the other outputs need: ids for the mask COG, outlines for the quicklook, whole layers for the extra formats
    (only when they are asked for: ``keep``)."""

    def __init__(self, plan: JobPlan, keep: bool, looks: QuicklookFeed) -> None:
        self.plan, self.keep, self.looks = plan, keep, looks
        self.rows: dict[str, int] = {}
        self.verdicts: set[str] = set()
        """Layers with a verdict column."""
        self.frames: dict[str, gpd.GeoDataFrame] = {}
        """Whole layers (output CRS), when kept."""

    def reproject(self, frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
        crs = self.plan.spec.output.crs
        return reproject_layers({"layer": frame}, crs)["layer"] if crs else frame

    def write(self, path: Path, info: ModelInfo, spool: ObjectSpool) -> None:
        """Stream one model's layer into ``path``; once more with the right geometry type if the guess was wrong."""
        whole = spool.count <= EXPORT_BATCH or self.plan.spec.output.simplify > 0
        appender = LayerAppender(path, info.name, None if whole else ("MultiPolygon" if spool.any_multi else "Polygon"))
        kept = []
        for batch in layer_frames(self.plan, info, spool, EXPORT_BATCH):
            if info.kind == "instance":
                spool.record_ids(batch.objects, set(batch.frame["id"].tolist()))
                self.looks.add(info.name, batch.frame)
            if "verdict" in batch.frame:
                self.verdicts.add(info.name)
            frame = self.reproject(batch.frame)
            appender.append(frame)
            if self.keep:
                kept.append(frame)
        if appender.redo:
            appender = LayerAppender(path, info.name, appender.redo, replace=True)
            for batch in layer_frames(self.plan, info, spool, EXPORT_BATCH):
                appender.append(self.reproject(batch.frame))
        self.rows[info.name] = appender.rows
        if self.keep:
            self.frames[info.name] = kept[0] if len(kept) == 1 else pd.concat(kept, ignore_index=True)
