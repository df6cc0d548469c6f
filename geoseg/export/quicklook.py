"""A quicklook beside the GeoPackage: false colour from a decimated read, field outlines coloured by verdict, masked
pixels greyed, a legend and a scale bar (PNG); optionally a self-contained HTML page (the PNG inline, the fields as
an SVG overlay with a tooltip each). Costs one read of at most ``max_size`` pixels a side, whatever the scene size.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from affine import Affine
from PIL import Image, ImageDraw, ImageFont

from geoseg.atomic import atomic_output
from geoseg.export.verdict import VERDICT_COLORS, VERDICTS
from geoseg.inputs.scene import Scene, read_decimated

MASKED_COLOR = (225, 225, 235)
"""Pixels the job could not see (clouds, nodata, outside the AOI)."""
PLAIN_OUTLINE = (255, 220, 0, 255)
"""Outlines of an instance layer without verdicts."""
MIN_SIZE = 800
"""A scene smaller than this (pixels a side) is drawn with bigger pixels."""
_COMPOSITES = (("nir", "red", "green"), ("red", "green", "blue"))


@dataclass(frozen=True)
class Canvas:
    """The decimated image and how map coordinates land on it."""

    image: Image.Image
    to_pixel: Affine
    metres_per_pixel: float


def false_colour(scene: Scene, max_size: int = 1024) -> Canvas:
    """NIR-red-green (else red-green-blue, else the first band in grey), 2-98 % stretch, masked pixels greyed."""
    names = scene.band_names
    bands = next((c for c in _COMPOSITES if set(c) <= set(names)), (names[0],) * 3)
    pixels, valid = read_decimated(scene, tuple(dict.fromkeys(bands)), max_size)
    order = [list(dict.fromkeys(bands)).index(b) for b in bands]
    rgb = np.zeros((*valid.shape, 3), np.uint8)
    for channel, i in enumerate(order):
        values = pixels[i]
        lo, hi = np.percentile(values[valid], (2, 98)) if valid.any() else (0.0, 1.0)
        rgb[..., channel] = np.clip((values - lo) / max(hi - lo, 1e-9) * 255, 0, 255).astype(np.uint8)
    rgb[~valid] = MASKED_COLOR
    zoom = max(1, math.ceil(MIN_SIZE / max(valid.shape)))  # small scenes: bigger pixels, legible outlines
    rgb = np.repeat(np.repeat(rgb, zoom, axis=0), zoom, axis=1)
    rows, cols = rgb.shape[:2]
    to_pixel = Affine.scale(cols / scene.width, rows / scene.height) * ~scene.transform
    return Canvas(Image.fromarray(rgb), to_pixel, _metres_per_scene_pixel(scene) * scene.width / cols)


def _metres_per_scene_pixel(scene: Scene) -> float:
    crs = scene.grid.proj
    if crs.is_geographic:
        return math.sqrt(scene.pixel_area_m2)
    return scene.pixel_size[0] * crs.axis_info[0].unit_conversion_factor


def _rings(geom: shapely.Geometry, to_pixel: Affine) -> list[list[tuple[float, float]]]:
    rings = []
    for poly in shapely.get_parts(geom):
        for ring in (poly.exterior, *poly.interiors):
            rings.append([to_pixel * xy for xy in ring.coords])
    return rings


def _outline_color(row: Mapping) -> tuple[int, int, int, int]:
    return VERDICT_COLORS.get(row.get("verdict"), PLAIN_OUTLINE)  # type: ignore[arg-type]


def draw_fields(canvas: Canvas, layers: Mapping[str, gpd.GeoDataFrame]) -> None:
    """Outline every feature of the instance layers, in its verdict's colour."""
    draw = ImageDraw.Draw(canvas.image)
    for gdf in layers.values():
        for row, geom in zip(gdf.drop(columns="geometry").to_dict("records"), gdf.geometry, strict=True):
            for ring in _rings(geom, canvas.to_pixel):
                draw.line([*ring, ring[0]], fill=_outline_color(row), width=2)


Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def _font(size: int) -> Font:
    return ImageFont.load_default(size=size)


def draw_legend(canvas: Canvas, counts: Mapping[str, int], title: str) -> None:
    """A legend box (verdicts with counts, masked pixels) top-left and a scale bar bottom-left."""
    draw = ImageDraw.Draw(canvas.image)
    size = max(11, canvas.image.width // 70)
    font = _font(size)
    entries = [(f"{v} ({counts[v]})", VERDICT_COLORS[v]) for v in VERDICTS if counts.get(v)]
    entries.append(("masked / no data", (*MASKED_COLOR, 255)))
    line = size + 6
    box_w = max(draw.textlength(text, font=font) for text, _ in [(title, None), *entries]) + 2 * size + 16
    draw.rectangle([6, 6, 6 + box_w, 12 + line * (len(entries) + 1)], fill=(255, 255, 255), outline=(0, 0, 0))
    draw.text((12, 10), title, fill=(0, 0, 0), font=font)
    for i, (text, color) in enumerate(entries, start=1):
        y = 10 + i * line
        draw.rectangle([12, y + 2, 12 + size, y + size], fill=color[:3], outline=(0, 0, 0))
        draw.text((20 + size, y), text, fill=(0, 0, 0), font=font)
    _scale_bar(draw, canvas, font, size)


def _scale_bar(draw: ImageDraw.ImageDraw, canvas: Canvas, font: Font, size: int) -> None:
    """A bar of a round length (1, 2 or 5 x 10^k m) about a fifth of the image wide."""
    target = canvas.image.width / 5 * canvas.metres_per_pixel
    exponent = 10 ** math.floor(math.log10(target))
    metres = max(m * exponent for m in (1, 2, 5) if m * exponent <= target)
    length = metres / canvas.metres_per_pixel
    x0, y0 = 12, canvas.image.height - 12 - size
    label = f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"
    draw.rectangle([x0 - 4, y0 - size - 8, x0 + length + 4, y0 + 8], fill=(255, 255, 255))
    draw.rectangle([x0, y0, x0 + length, y0 + 4], fill=(0, 0, 0))
    draw.text((x0, y0 - size - 4), label, fill=(0, 0, 0), font=font)


def render(scene: Scene, layers: Mapping[str, gpd.GeoDataFrame], title: str, max_size: int = 1024) -> Canvas:
    """The quicklook image; ``layers`` (instance layers, scene CRS) are outlined."""
    canvas = false_colour(scene, max_size)
    draw_fields(canvas, layers)
    counts: dict[str, int] = {}
    for gdf in layers.values():
        if "verdict" in gdf:
            for verdict, n in gdf["verdict"].value_counts().items():
                counts[str(verdict)] = counts.get(str(verdict), 0) + int(n)
    draw_legend(canvas, counts, title)
    return canvas


class QuicklookFeed:
    """The quicklook drawn while a layer streams out in batches: the same image as :func:`render` of the whole
    layers. Only the HTML page keeps the features (it holds one SVG path per field anyway)."""

    def __init__(self, scene: Scene, title: str, png: Path | None, page: Path | None) -> None:
        self.title, self.png, self.page = title, png, page
        self.canvas = false_colour(scene) if png is not None or page is not None else None
        self.counts: dict[str, int] = {}
        self.frames: dict[str, list[gpd.GeoDataFrame]] = {}

    def add(self, name: str, gdf: gpd.GeoDataFrame) -> None:
        """Outline a batch of an instance layer (scene CRS)."""
        if self.canvas is None:
            return
        draw_fields(self.canvas, {name: gdf})
        if "verdict" in gdf:
            for verdict, n in gdf["verdict"].value_counts().items():
                self.counts[str(verdict)] = self.counts.get(str(verdict), 0) + int(n)
        if self.page is not None:
            self.frames.setdefault(name, []).append(gdf)

    def write(self, overwrite: bool) -> list[Path]:
        """Add the legend and write the PNG and / or the HTML page."""
        if self.canvas is None:
            return []
        draw_legend(self.canvas, self.counts, self.title)
        written = [write_png(self.canvas, self.png, overwrite)] if self.png is not None else []
        if self.page is not None:
            layers = {name: pd.concat(parts, ignore_index=True) for name, parts in self.frames.items()}
            written.append(write_html(self.canvas, layers, self.page, self.title, overwrite))
        return written


def write_png(canvas: Canvas, path: Path, overwrite: bool) -> Path:
    with atomic_output(path, overwrite) as tmp:
        canvas.image.save(tmp, format="PNG", optimize=True)
    return path


def _svg_ring(ring: list[tuple[float, float]]) -> str:
    return "M " + " L ".join(f"{x:.1f} {y:.1f}" for x, y in ring) + " Z"


def write_html(canvas: Canvas, layers: Mapping[str, gpd.GeoDataFrame], path: Path, title: str, overwrite: bool) -> Path:
    """A self-contained page: the PNG inline, an SVG polygon per field with its attributes as a tooltip."""
    buffer = io.BytesIO()
    canvas.image.save(buffer, format="PNG", optimize=True)
    png = base64.b64encode(buffer.getvalue()).decode("ascii")
    w, h = canvas.image.size
    shapes = []
    for gdf in layers.values():
        columns = [c for c in ("id", "verdict", "ndvi_median", "share_masked", "area_m2") if c in gdf]
        for row, geom in zip(gdf[columns].to_dict("records"), gdf.geometry, strict=True):
            tip = html.escape(", ".join(f"{k} {v}" for k, v in row.items()))
            d = " ".join(
                "M " + " L ".join(f"{x:.1f} {y:.1f}" for x, y in ring) + " Z" for ring in _rings(geom, canvas.to_pixel)
            )
            color = "rgb({},{},{})".format(*_outline_color(row)[:3])
            shapes.append(f'<path d="{d}" stroke="{color}"><title>{tip}</title></path>')
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{margin:0;font-family:sans-serif}} svg path{{fill:transparent;stroke-width:2;fill-rule:evenodd}}
svg path:hover{{fill:rgba(255,255,255,.35)}}</style></head>
<body><svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="100%" style="max-width:{w}px">
<image width="{w}" height="{h}" href="data:image/png;base64,{png}"/>
{chr(10).join(shapes)}
</svg></body></html>
"""
    with atomic_output(path, overwrite) as tmp:
        tmp.write_text(page)
    return path
