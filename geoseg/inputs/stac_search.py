"""STAC API input (``inputs.stac_search``): search an API by area, dates and cloud cover, group the items found into
days, and make one day's items the job's bands (a mosaic per band, several tiles and CRSs onto one scene grid).

The search runs once, when the job is planned, with pystac-client. Nothing is downloaded: each asset is read like a
local file through GDAL (``/vsicurl/`` range requests, only the blocks a window needs), with ``empty_dir=yes`` so GDAL
neither lists the asset's folder nor probes for side-car files.

Signing (``signing:``), never code in the spec:

- ``none``: public APIs and assets (Earth Search's Sentinel-2 COGs). For requester-pays buckets, set GDAL's own
  ``AWS_REQUEST_PAYER=requester`` (and AWS credentials) in the environment of the driver and the workers.
- ``planetary_computer``: GDAL signs each asset URL with a Planetary Computer SAS token, and renews it
  (``/vsicurl?pc_url_signing=yes``); the search itself is public.
- ``bearer``: the token in the environment variable ``token_env`` (default ``GEOSEG_STAC_TOKEN``) goes to the API as
  ``Authorization: Bearer ...`` and to GDAL as ``GDAL_HTTP_HEADERS`` (set in this process when it is not set already,
  by ``geoseg run`` before Ray starts: embedded Ray workers inherit it; on a cluster set it on the workers too).
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pystac
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import WindowError
from rasterio.features import geometry_mask
from rasterio.windows import Window, from_bounds

from geoseg.errors import InputError
from geoseg.inputs.grid import to_crs
from geoseg.inputs.qa import masked_pixels
from geoseg.inputs.stac import StacInputs, asset_href, asset_ref
from geoseg.spec.job import InputSpec, QualityMaskSpec
from geoseg.spec.search import StacSearchSpec, bearer_headers

WGS84 = CRS.from_epsg(4326)
MASK_READ_PX = 256
"""With ``cloud_from_mask``: the most pixels a side read of an item's mask asset."""


@dataclass(frozen=True)
class FoundItem:
    """One item a search found: what ``geoseg plan`` lists."""

    id: str
    datetime: dt.datetime
    cloud_cover: float | None
    """``eo:cloud_cover`` in percent, when the item gives it."""
    crs: str
    """The item's ``proj:code`` / ``proj:epsg`` (e.g. EPSG:32618), or ``?``."""
    area_share: float
    """The share of the searched area this item's footprint covers (0-1)."""
    mask_cloud: float | None = None
    """With ``cloud_from_mask``: the percent of the item's observed pixels inside the area its mask asset masks."""


@dataclass(frozen=True)
class SearchDay:
    """The items of one day (UTC): one acquisition, a mosaic of tiles."""

    day: dt.date
    items: tuple[FoundItem, ...]
    coverage: float
    """The share of the searched area the day's footprints cover together (0-1)."""
    cloud_cover: float | None
    """The items' cloud cover weighted by how much of the area each covers; None when an item gives none."""
    cloud_from: str = "eo:cloud_cover"
    """Where ``cloud_cover`` comes from: the items' ``eo:cloud_cover``, or their ``mask`` asset."""


@dataclass(frozen=True)
class SearchResult:
    """A search and its answer: every day found (oldest first) and the day chosen for the scene."""

    url: str
    collections: tuple[str, ...]
    bbox: tuple[float, float, float, float]
    days: tuple[SearchDay, ...]
    chosen: dt.date
    reason: str
    """Why that day: ``inputs.stac_search.date``, or the choice rule."""

    def describe(self) -> list[str]:
        """Lines for ``geoseg plan``: the search, each day with its items and cloud cover, the day chosen."""
        count = sum(len(d.items) for d in self.days)
        bbox = ", ".join(f"{v:.4f}" for v in self.bbox)
        lines = [f"stac search  {self.url} {', '.join(self.collections)}: {count} item(s) on {len(self.days)} "
                 f"day(s) in [{bbox}]"]  # fmt: skip
        for day in self.days:
            mark = "*" if day.day == self.chosen else " "
            source = " (mask)" if day.cloud_from == "mask" else ""
            lines.append(f"  {mark} {day.day}  {len(day.items)} item(s), {day.coverage:.0%} of the area, cloud "
                         f"{_percent(day.cloud_cover)}{source}")  # fmt: skip
            for i in day.items:
                mask = "" if i.mask_cloud is None else f" (mask {_percent(i.mask_cloud)})"
                lines.append(f"      {i.id}  {i.crs}  cloud {_percent(i.cloud_cover)}{mask}  {i.area_share:.0%} of "
                             f"the area")  # fmt: skip
        lines.append(f"date         {self.chosen} ({self.reason})")
        return lines


def _percent(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}%"


def search_area(spec: StacSearchSpec, aoi: shapely.Geometry | None, aoi_crs: str | None) -> shapely.Geometry:
    """The area searched, in lon/lat: ``bbox`` if given, else the AOI."""
    if spec.bbox is not None:
        return shapely.box(*spec.bbox)
    if aoi is None:
        raise InputError("inputs.stac_search needs an area: give aoi, or inputs.stac_search.bbox in degrees")
    return to_crs(aoi, aoi_crs or "EPSG:4326", WGS84)


def resolve_search(
    spec: InputSpec, aoi: shapely.Geometry | None = None, aoi_crs: str | None = None
) -> tuple[StacInputs, SearchResult]:
    """Search the API, choose a day, and map the spec's assets to that day's hrefs (one per item, a mosaic).

    Args:
        spec: the job's inputs (with ``stac_search`` and ``assets``).
        aoi: the job's area of interest, in ``aoi_crs``: the area searched when ``stac_search.bbox`` is not given.
        aoi_crs: CRS of ``aoi``.

    Returns:
        The bands' hrefs (items ordered by cloud cover, then id: the first item that covers a pixel gives it) and the
        search's listing.

    Raises:
        InputError: the API cannot be reached or answers an error, nothing is found, more than ``max_items`` are
            found, ``date`` has no items, or an item lacks an asset.
    """
    search = spec.stac_search
    assert search is not None and spec.assets is not None
    area = search_area(search, aoi, aoi_crs)
    items = [i for i in find_items(search, area) if _cloud_ok(i, search.max_cloud_cover)]
    if not items:
        cloud = f" with eo:cloud_cover <= {search.max_cloud_cover:g}" if search.max_cloud_cover is not None else ""
        raise InputError(f"the STAC search found no items{cloud} in {', '.join(search.collections)} for "
                         f"{search.datetime} over the area: widen inputs.stac_search (datetime, bbox/aoi, "
                         f"max_cloud_cover, collections)")  # fmt: skip
    by_day: dict[dt.date, list[pystac.Item]] = {}
    for item in sorted(items, key=lambda i: (_cloud(i) is None, _cloud(i) or 0.0, i.id)):
        by_day.setdefault(_when(item).date(), []).append(item)
    mask = _cloud_mask(spec)
    days = tuple(_day(day, by_day[day], area, mask) for day in sorted(by_day))
    chosen, reason = _choose(days, search.date)
    result = SearchResult(search.url, tuple(search.collections), area.bounds, days, chosen, reason)
    return _hrefs(spec, by_day[chosen], search), result


def find_items(spec: StacSearchSpec, area: shapely.Geometry) -> list[pystac.Item]:
    """Items of the collections that intersect ``area`` (lon/lat bounds) in the date range; at most ``max_items``.

    The cloud cover filter goes to the API when it speaks CQL2 filters; it is applied here as well either way.
    """
    from pystac_client import Client
    from pystac_client.conformance import ConformanceClasses

    try:
        client = Client.open(spec.url, headers=bearer_headers(spec), timeout=60)
        query: dict[str, Any] = {}
        if spec.max_cloud_cover is not None and client.conforms_to(ConformanceClasses.FILTER):
            query["filter"] = {"op": "<=", "args": [{"property": "eo:cloud_cover"}, spec.max_cloud_cover]}
            query["filter_lang"] = "cql2-json"
        found = client.search(collections=spec.collections, bbox=area.bounds, datetime=spec.datetime,
                              max_items=spec.max_items + 1, **query)  # fmt: skip
        items = list(found.items())
    except InputError:
        raise
    except Exception as err:  # pystac-client raises APIError, requests' errors, JSON errors, ValueError ...
        raise InputError(f"STAC API {spec.url}: {_one_line(err)}; check inputs.stac_search (url, collections, "
                         f"datetime)") from None  # fmt: skip
    if len(items) > spec.max_items:
        raise InputError(f"the STAC search found more than {spec.max_items} items: narrow the area or the dates, or "
                         f"raise inputs.stac_search.max_items (--max-items)")  # fmt: skip
    return items


def _one_line(err: Exception) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _cloud(item: pystac.Item) -> float | None:
    value = item.properties.get("eo:cloud_cover")
    return float(value) if isinstance(value, int | float) else None


def _cloud_ok(item: pystac.Item, limit: float | None) -> bool:
    cloud = _cloud(item)
    return limit is None or (cloud is not None and cloud <= limit)


def _when(item: pystac.Item) -> dt.datetime:
    when = item.datetime or item.common_metadata.start_datetime
    if when is None:
        raise InputError(f"STAC item {item.id} has no datetime or start_datetime: it cannot be put on a day")
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _crs_name(item: pystac.Item) -> str:
    code = item.properties.get("proj:code") or item.properties.get("proj:epsg")
    return "?" if code is None else str(code) if isinstance(code, str) else f"EPSG:{code}"


def _footprint(item: pystac.Item) -> shapely.Geometry:
    if item.geometry is not None:
        return shapely.geometry.shape(item.geometry)
    if item.bbox is not None:
        return shapely.box(*item.bbox[:2], *item.bbox[-2:]) if len(item.bbox) == 6 else shapely.box(*item.bbox)
    raise InputError(f"STAC item {item.id} has neither geometry nor bbox")


def _cloud_mask(spec: InputSpec) -> tuple[QualityMaskSpec, Callable[[str], str]] | None:
    """With ``cloud_from_mask``: the mask spec and how its hrefs become GDAL paths."""
    search = spec.stac_search
    assert search is not None
    if not search.cloud_from_mask:
        return None
    if spec.mask is None or spec.mask.asset is None:
        raise InputError("inputs.stac_search.cloud_from_mask needs inputs.mask.asset (e.g. {asset: scl, kind: s2_scl})")
    return spec.mask, _gdal_path(search.signing)


def _day(
    day: dt.date,
    items: list[pystac.Item],
    area: shapely.Geometry,
    mask: tuple[QualityMaskSpec, Callable[[str], str]] | None,
) -> SearchDay:
    """A day's listing: each item's share of the area, their union's, and the area-weighted cloud cover (from the
    items' mask assets when ``mask`` is given)."""
    size = area.area or 1.0
    parts = [_footprint(i).intersection(area) for i in items]
    found = tuple(
        FoundItem(i.id, _when(i), _cloud(i), _crs_name(i), p.area / size, _mask_cloud(i, area, mask))
        for i, p in zip(items, parts, strict=True)
    )
    if mask is not None:
        clouds = [f.mask_cloud for f in found]
        weights = [f.area_share if f.mask_cloud is not None else 0.0 for f in found]
        cloud = _weighted([c for c in clouds if c is not None], [w for c, w in zip(clouds, weights, strict=True)
                                                                 if c is not None])  # fmt: skip
        return SearchDay(day, found, shapely.union_all(parts).area / size, cloud, "mask")
    clouds = [f.cloud_cover for f in found]
    weights = [f.area_share for f in found]
    cloud = None if None in clouds else _weighted([c for c in clouds if c is not None], weights)
    return SearchDay(day, found, shapely.union_all(parts).area / size, cloud)


def _weighted(values: list[float], weights: list[float]) -> float | None:
    total = sum(weights)
    return sum(v * w for v, w in zip(values, weights, strict=True)) / total if values and total > 0 else None


def _mask_cloud(
    item: pystac.Item, area: shapely.Geometry, mask: tuple[QualityMaskSpec, Callable[[str], str]] | None
) -> float | None:
    """Percent of the item's observed pixels inside ``area`` (lon/lat) that its mask asset masks: a read of at most
    ``MASK_READ_PX`` a side (GDAL takes overviews where the file has them). None without ``mask`` or without a pixel
    of the item in the area."""
    if mask is None:
        return None
    spec, to_gdal = mask
    assert spec.asset is not None
    href = to_gdal(asset_href(item, spec.asset, "inputs.mask"))
    try:
        with rasterio.open(href) as src:
            local = to_crs(area, "EPSG:4326", src.crs)
            try:
                window = from_bounds(*local.bounds, src.transform).intersection(Window(0, 0, src.width, src.height))
            except WindowError:
                return None
            factor = max(1.0, max(window.width, window.height) / MASK_READ_PX)
            shape = max(1, round(window.height / factor)), max(1, round(window.width / factor))
            qa = src.read(spec.band, window=window, out_shape=shape, resampling=Resampling.nearest)
            seen = src.read_masks(spec.band, window=window, out_shape=shape, resampling=Resampling.nearest) > 0
            transform = src.window_transform(window) * Affine.scale(window.width / shape[1], window.height / shape[0])
    except rasterio.RasterioIOError as err:
        raise InputError(f"cannot read the mask asset of STAC item {item.id}: {_one_line(err)}") from None
    observed = seen & geometry_mask([local], shape, transform, invert=True)
    return float(masked_pixels(qa, spec)[observed].mean() * 100) if observed.any() else None


def _choose(days: tuple[SearchDay, ...], wanted: dt.date | None) -> tuple[dt.date, str]:
    """The day asked for, else the one covering the most of the area, then with the least cloud, then the latest."""
    if wanted is not None:
        if wanted not in {d.day for d in days}:
            have = ", ".join(str(d.day) for d in days)
            raise InputError(f"inputs.stac_search.date {wanted} has no items; days found: {have}")
        return wanted, "inputs.stac_search.date"

    def rank(day: SearchDay) -> tuple[float, float, int]:
        cloud = 101.0 if day.cloud_cover is None else day.cloud_cover
        return -round(day.coverage, 3), cloud, -day.day.toordinal()

    return min(days, key=rank).day, "most of the area covered, then least cloud"


def _hrefs(spec: InputSpec, items: list[pystac.Item], search: StacSearchSpec) -> StacInputs:
    """The bands' (and the mask's) hrefs over the day's items, as GDAL reads them."""
    assert spec.assets is not None
    to_gdal = _gdal_path(search.signing)
    bands: dict[str, tuple[tuple[str, ...], int]] = {}
    for name, value in spec.assets.items():
        ref = asset_ref(value)
        bands[name] = (tuple(to_gdal(asset_href(i, ref.asset, f"band {name}")) for i in items), ref.band)
    mask_asset = spec.mask.asset if spec.mask is not None else None
    mask = tuple(to_gdal(asset_href(i, mask_asset, "inputs.mask")) for i in items) if mask_asset else ()
    return StacInputs(bands, mask, min(_when(i) for i in items))


def _gdal_path(signing: str) -> Callable[[str], str]:
    """How an asset href becomes a GDAL path: http(s) through ``/vsicurl?`` with range requests and no folder
    listing (and Planetary Computer signing); anything else (local, ``s3://``, ``/vsi...``) as it is."""
    options = "empty_dir=yes" + ("&pc_url_signing=yes" if signing == "planetary_computer" else "")

    def convert(href: str) -> str:
        if href.startswith(("http://", "https://")):
            return f"/vsicurl?{options}&url={urllib.parse.quote(href, safe='')}"
        return href

    return convert
