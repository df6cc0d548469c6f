"""STAC input: a STAC Item's assets as the job's bands (``inputs: {stac: item.json, assets: {red: B04, ...}}``).

The Item is read with pystac (a local file or a URL). Asset hrefs are made absolute against the Item's own location
and handed to rasterio as they are: local paths, or any URI GDAL reads (``https://`` through /vsicurl/, ``s3://``,
``/vsi...``). The Item's ``datetime`` becomes the imagery's acquisition time (an Item with only a range gives none).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pystac

from geoseg.errors import InputError
from geoseg.spec.job import InputSpec, StacAssetRef


@dataclass(frozen=True)
class StacInputs:
    """What STAC gives the scene: band name -> (hrefs, band index), the QA raster's hrefs (none without a mask
    asset), the time; one Item gives one href per band, a search one per item of the day (a mosaic)."""

    bands: dict[str, tuple[tuple[str, ...], int]]
    mask_hrefs: tuple[str, ...]
    datetime: datetime | None


def read_item(href: str) -> pystac.Item:
    """The STAC Item at ``href``; a one-line error when it cannot be read or is not an Item."""
    try:
        stac_object = pystac.read_file(href)
    except Exception as err:  # pystac raises many types (OSError, JSON errors, STACTypeError ...)
        raise InputError(f"cannot read STAC item {href}: {err}; fix inputs.stac") from None
    if not isinstance(stac_object, pystac.Item):
        raise InputError(f"{href} is a STAC {type(stac_object).__name__}, not an Item; point inputs.stac at an Item")
    return stac_object


def asset_ref(ref: str | StacAssetRef) -> StacAssetRef:
    """An ``inputs.assets`` value as an asset key and band index."""
    return ref if isinstance(ref, StacAssetRef) else StacAssetRef(asset=ref)


def asset_href(item: pystac.Item, key: str, source: str) -> str:
    """The absolute href of asset ``key``; a one-line error naming the item's assets when it has none such."""
    asset = item.assets.get(key)
    if asset is None:
        have = ", ".join(sorted(item.assets)) or "none"
        raise InputError(f"STAC item {item.id} has no asset {key!r} ({source}); its assets: {have}")
    return asset.get_absolute_href() or asset.href


def resolve_stac(spec: InputSpec) -> StacInputs:
    """Map the spec's assets to hrefs (and the mask asset, if any)."""
    assert spec.stac is not None and spec.assets is not None
    item = read_item(spec.stac)
    bands: dict[str, tuple[tuple[str, ...], int]] = {}
    for name, value in spec.assets.items():
        ref = asset_ref(value)
        bands[name] = ((asset_href(item, ref.asset, f"band {name}"),), ref.band)
    mask_asset = spec.mask.asset if spec.mask is not None else None
    mask_hrefs = (asset_href(item, mask_asset, "inputs.mask"),) if mask_asset else ()
    return StacInputs(bands, mask_hrefs, item.datetime)
