"""Spec section of a STAC API search (``inputs.stac_search``): which items make the scene. Re-exported by
:mod:`geoseg.spec.job`; the search itself is :mod:`geoseg.inputs.stac_search`."""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Literal

from pydantic import Field, field_validator

from geoseg.errors import InputError
from geoseg.spec.base import StrictModel

logger = logging.getLogger(__name__)

Signing = Literal["none", "planetary_computer", "bearer"]

DEFAULT_MAX_ITEMS = 200
"""Items a search may return before the job is refused (an AOI or bbox that spans a continent)."""


class StacSearchSpec(StrictModel):
    """Search a STAC API by area, dates and cloud cover; the items of one day are mosaicked into the scene."""

    url: str = Field(description="Root of the STAC API, e.g. https://earth-search.aws.element84.com/v1.")
    collections: list[str] = Field(min_length=1, description="Collections searched, e.g. [sentinel-2-l2a].")
    datetime: str = Field(
        description="Dates searched: an RFC 3339 interval or day, e.g. 2024-06-01/2024-08-31 or 2024-06-15."
    )
    bbox: tuple[float, float, float, float] | None = Field(
        None, description="Area searched (lon/lat: west, south, east, north); default: the job's aoi."
    )
    max_cloud_cover: float | None = Field(
        None, ge=0, le=100, description="Drop items whose eo:cloud_cover (percent) is above this, or unknown."
    )
    date: dt.date | None = Field(
        None,
        description="The day (UTC) whose items make the scene; default: the day covering the most of the area, "
        "then with the least cloud, then the latest.",
    )
    cloud_from_mask: bool = Field(
        False,
        description="Measure each item's cloud inside the area from its inputs.mask asset (a decimated read, from "
        "overviews where the file has them) and choose the day by that, not by eo:cloud_cover.",
    )
    max_items: int = Field(
        DEFAULT_MAX_ITEMS, ge=1, description="Refuse a search that finds more items than this (CLI: --max-items)."
    )
    signing: Signing = Field(
        "none",
        description="How asset URLs and API requests are authorised: none; planetary_computer (SAS tokens, needs "
        "pip install planetary-computer); bearer (the token from the environment variable token_env).",
    )
    token_env: str = Field("GEOSEG_STAC_TOKEN", description="With signing bearer: the variable holding the token.")

    @field_validator("bbox")
    @classmethod
    def _ordered(cls, value: tuple[float, float, float, float] | None) -> tuple[float, float, float, float] | None:
        if value is not None and not (value[0] < value[2] and value[1] < value[3]):
            raise ValueError(f"inputs.stac_search.bbox must be [west, south, east, north] in degrees, got {value}")
        return value


def bearer_headers(spec: StacSearchSpec) -> dict[str, str] | None:
    """With ``signing: bearer``, the API's ``Authorization`` header; GDAL gets it too, as ``GDAL_HTTP_HEADERS`` set
    in this process when it is not set already (Ray workers started afterwards inherit it). None otherwise.

    Raises:
        InputError: the token's environment variable is not set.
    """
    if spec.signing != "bearer":
        return None
    token = os.environ.get(spec.token_env, "").strip()
    if not token:
        raise InputError(f"inputs.stac_search.signing is bearer: set the environment variable {spec.token_env} to "
                         f"the token (or name another in token_env)")  # fmt: skip
    header = f"Authorization: Bearer {token}"
    if os.environ.setdefault("GDAL_HTTP_HEADERS", header) != header:
        logger.warning("GDAL_HTTP_HEADERS is set already: asset reads send it, not the bearer token")
    return {"Authorization": f"Bearer {token}"}
