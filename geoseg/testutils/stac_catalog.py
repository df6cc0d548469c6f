"""A STAC collection made of the sample's bands (jobs/sample), for tests of ``inputs.stac_search``.

The 768 x 768 px sample is cut into 2 x 2 tiles (384 px at 10 m, 192 px at 20 m), tiled GeoTIFFs with 128 px blocks,
and listed as items on three days:

- 2024-06-01 (cloud 10 %): the four tiles in the sample's UTM zone 18N;
- 2024-06-11 (cloud 20 %): the west tiles in zone 18N, the east tiles reprojected to zone 19N (two CRSs, one day);
- 2024-06-21 (cloud 80 %): the four 18N tiles again.

Each item also has an ``SCL`` asset (Sentinel-2 scene classes, 20 m, ``scl/<item>.tif``): vegetation (4) everywhere
but on 2024-06-01, whose northern tiles are cloud (9): by its masks that day is half cloudy, whatever its
``eo:cloud_cover`` says.

:func:`make_tiles` writes the rasters once; :func:`write_catalog` writes the collection and its items with asset hrefs
under a base URL (where a file server serves the folder).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.warp import Resampling, calculate_default_transform, reproject, transform_bounds
from rasterio.windows import Window

SAMPLE = Path(__file__).resolve().parents[2] / "jobs" / "sample"
BANDS = ("B02", "B03", "B04", "B05", "B08", "B11")
COLLECTION = "sample-s2"
ZONE_18, ZONE_19 = 32618, 32619
TILES = ("r0c0", "r0c1", "r1c0", "r1c1")
EAST = ("r0c1", "r1c1")
CLOUDY = ("d1-r0c0", "d1-r0c1")
"""Items whose SCL asset is all cloud."""


@dataclass(frozen=True)
class CatalogItem:
    """One item to list: its id, day, cloud cover, and the folder (relative) of its band files."""

    id: str
    day: str
    cloud_cover: float
    folder: str
    epsg: int


ITEMS = tuple(
    [CatalogItem(f"d1-{t}", "2024-06-01", 10.0, f"z18/{t}", ZONE_18) for t in TILES]
    + [
        CatalogItem(
            f"d2-{t}", "2024-06-11", 20.0, f"z19/{t}" if t in EAST else f"z18/{t}", ZONE_19 if t in EAST else ZONE_18
        )
        for t in TILES
    ]
    + [CatalogItem(f"d3-{t}", "2024-06-21", 80.0, f"z18/{t}", ZONE_18) for t in TILES]
)


def _profile(src: rasterio.io.DatasetReader, **changes: object) -> dict[str, object]:
    profile = dict(src.profile)
    profile.update(driver="GTiff", tiled=True, blockxsize=128, blockysize=128, compress="deflate", nodata=0)
    profile.update(changes)
    return profile


def make_tiles(folder: Path) -> Path:
    """Write the tiles of every band (``z18/<tile>/<band>.tif``, ``z19/<tile>/<band>.tif``) under ``folder``."""
    for band in BANDS:
        with rasterio.open(SAMPLE / f"{band}.tif") as src:
            half_w, half_h = src.width // 2, src.height // 2
            for tile in TILES:
                row, col = int(tile[1]), int(tile[3])
                window = Window(col * half_w, row * half_h, half_w, half_h)
                data = src.read(window=window)
                profile = _profile(src, width=half_w, height=half_h, transform=src.window_transform(window))
                path = folder / "z18" / tile / f"{band}.tif"
                path.parent.mkdir(parents=True, exist_ok=True)
                with rasterio.open(path, "w", **profile) as dst:
                    dst.write(data)
                if tile in EAST:
                    _to_zone_19(path, folder / "z19" / tile / f"{band}.tif")
    for entry in ITEMS:
        _scene_classes(folder / entry.folder / "B05.tif", folder / "scl" / f"{entry.id}.tif", cloudy=entry.id in CLOUDY)
    return folder


def _scene_classes(b05: Path, out: Path, cloudy: bool) -> None:
    """An SCL raster on a 20 m band's grid: 0 where the band has no data, else 9 (cloud) or 4 (vegetation)."""
    with rasterio.open(b05) as src:
        data = src.read(1)
        classes = np.where(data == 0, 0, 9 if cloudy else 4).astype(np.uint8)
        out.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(out, "w", **_profile(src, dtype="uint8", count=1)) as dst:
            dst.write(classes, 1)


def _to_zone_19(path: Path, out: Path) -> None:
    """Reproject a tile to UTM zone 19N at its own pixel size (nearest: DNs stay DNs)."""
    with rasterio.open(path) as src:
        dst_crs = rasterio.crs.CRS.from_epsg(ZONE_19)
        res = abs(src.transform.a)
        transform, width, height = calculate_default_transform(
            src.crs, dst_crs, src.width, src.height, *src.bounds, resolution=res
        )
        data = np.zeros((src.count, height, width), src.dtypes[0])
        reproject(
            rasterio.band(src, 1),
            data[0],
            dst_transform=transform,
            dst_crs=dst_crs,
            resampling=Resampling.nearest,
            src_nodata=0,
            dst_nodata=0,
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(
            out, "w", **_profile(src, crs=dst_crs, transform=transform, width=width, height=height)
        ) as dst:
            dst.write(data)


def _item(entry: CatalogItem, folder: Path, base_url: str) -> dict[str, object]:
    with rasterio.open(folder / entry.folder / "B04.tif") as src:
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    assets = {
        band: {
            "href": f"{base_url}/{entry.folder}/{band}.tif",
            "type": "image/tiff; application=geotiff",
            "roles": ["data"],
        }
        for band in BANDS
    }
    assets["SCL"] = {
        "href": f"{base_url}/scl/{entry.id}.tif",
        "type": "image/tiff; application=geotiff",
        "roles": ["data"],
    }
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [],
        "id": entry.id,
        "collection": COLLECTION,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": [west, south, east, north],
        "properties": {
            "datetime": f"{entry.day}T15:50:00Z",
            "eo:cloud_cover": entry.cloud_cover,
            "proj:code": f"EPSG:{entry.epsg}",
            "platform": "sentinel-2a",
        },
        "links": [],
        "assets": assets,
    }


def write_catalog(folder: Path, base_url: str, out: Path | None = None) -> tuple[Path, Path]:
    """Write ``collection.json`` and ``items.json`` (a FeatureCollection) into ``out`` (default: ``folder``); asset
    hrefs are ``base_url`` + the files' paths under ``folder``."""
    features = [_item(entry, folder, base_url) for entry in ITEMS]
    boxes = np.array([f["bbox"] for f in features], float)
    collection = {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": COLLECTION,
        "description": "The geoseg sample (Sentinel-2 L1C crop) cut into tiles, days and two UTM zones.",
        "license": "proprietary",
        "extent": {
            "spatial": {"bbox": [[*boxes[:, :2].min(axis=0), *boxes[:, 2:].max(axis=0)]]},
            "temporal": {"interval": [["2024-06-01T00:00:00Z", "2024-06-30T00:00:00Z"]]},
        },
        "links": [],
    }
    out = out or folder
    out.mkdir(parents=True, exist_ok=True)
    collection_path, items_path = out / "collection.json", out / "items.json"
    collection_path.write_text(json.dumps(collection))
    items_path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return collection_path, items_path


def sample_bbox() -> tuple[float, float, float, float]:
    """The sample's extent in lon/lat, shrunk by 1 % so that no neighbouring tile only touches it."""
    with rasterio.open(SAMPLE / "B04.tif") as src:
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    dx, dy = (east - west) * 0.01, (north - south) * 0.01
    return west + dx, south + dy, east - dx, north - dy


def block_bytes(path: Path, bounds: tuple[float, float, float, float] | None = None, margin: int = 1) -> int:
    """Bytes of a single-band tiled GeoTIFF's blocks that a read of ``bounds`` (in the file's CRS; default: the
    whole file) touches, ``margin`` pixels added on each side for resampling."""
    with rasterio.open(path) as src:
        window = Window(0, 0, src.width, src.height) if bounds is None else src.window(*bounds)
        block_rows, block_cols = src.block_shapes[0]
        col0 = max(0, int(np.floor(window.col_off)) - margin)
        row0 = max(0, int(np.floor(window.row_off)) - margin)
        col1 = min(src.width, int(np.ceil(window.col_off + window.width)) + margin)
        row1 = min(src.height, int(np.ceil(window.row_off + window.height)) + margin)
        if col0 >= col1 or row0 >= row1:
            return 0
        total = 0
        for block_row in range(row0 // block_rows, (row1 - 1) // block_rows + 1):
            for block_col in range(col0 // block_cols, (col1 - 1) // block_cols + 1):
                total += int(src.get_tag_item(f"BLOCK_SIZE_{block_col}_{block_row}", "TIFF", bidx=1) or 0)
        return total


def header_bytes(path: Path) -> int:
    """Bytes of a file that are not pixel blocks: the header, the directory, the block offset tables."""
    return path.stat().st_size - block_bytes(path, margin=0)
