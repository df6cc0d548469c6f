"""inputs.stac_search against a real STAC API (rustac's server, in-memory backend, on 127.0.0.1) whose items are the
sample's bands cut into tiles, days and two UTM zones, served by a local file server with range requests. Nothing
here is mocked: pystac-client talks to the API, GDAL reads the assets over HTTP."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from geoseg.cli import main
from geoseg.errors import InputError, SpecError
from geoseg.inputs.scene import open_scene, read_decimated, read_window
from geoseg.plan.job import describe, plan_job
from geoseg.spec.job import InputSpec, parse_spec
from geoseg.testutils.stac_catalog import COLLECTION, SAMPLE, make_tiles, sample_bbox, write_catalog
from geoseg.testutils.stac_server import free_port, range_file_server, rustac_binary, stac_api

pytestmark = pytest.mark.skipif(rustac_binary() is None, reason="rustac (the STAC API server) is not installed")

ASSETS = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "rededge": "B05", "swir16": "B11"}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """(tiles folder, file server, API URL): the tiled sample served over HTTP and listed by a STAC API."""
    folder = make_tiles(tmp_path_factory.mktemp("stac"))
    with range_file_server(folder) as files, stac_api(*write_catalog(folder, files.url)) as api:
        yield folder, files, api


def _search(api: str, **changes: Any) -> dict[str, Any]:
    search = {"url": api, "collections": [COLLECTION], "datetime": "2024-06-01/2024-06-30", "bbox": list(sample_bbox()),
              "max_cloud_cover": 50}  # fmt: skip
    search.update(changes)
    return search


def _inputs(api: str, **changes: Any) -> InputSpec:
    return InputSpec(stac_search=_search(api, **changes), assets=ASSETS, nodata=0, scale=0.0001)


def _job(api: str, tmp_path: Path, **changes: Any) -> dict[str, Any]:
    return {"inputs": {"stac_search": _search(api, **changes), "assets": ASSETS, "nodata": 0, "scale": 0.0001},
            "models": [{"type": "crop_health"}], "output": {"path": str(tmp_path / "out.gpkg")}}  # fmt: skip


def test_plan_lists_days_and_items_and_picks_the_least_cloudy_day(catalog, tmp_path):
    _, _, api = catalog
    plan = plan_job(parse_spec(_job(api, tmp_path)), with_stats=False)
    text = describe(plan)
    assert "8 item(s) on 2 day(s)" in text  # the 80 % cloud day is left out by max_cloud_cover 50
    assert "* 2024-06-01  4 item(s), 100% of the area, cloud 10.0%" in text
    assert "    2024-06-11  4 item(s), 100% of the area, cloud 20.0%" in text
    assert "d2-r0c1  EPSG:32619  cloud 20.0%" in text and "2024-06-21" not in text
    assert "date         2024-06-01 (most of the area covered, then least cloud)" in text
    with rasterio.open(SAMPLE / "B04.tif") as src:  # the four 18N tiles make up the sample's grid again
        assert (plan.scene.crs, plan.scene.transform, plan.scene.width, plan.scene.height) == (
            src.crs, src.transform, src.width, src.height)  # fmt: skip
    assert plan.scene.datetime == dt.datetime(2024, 6, 1, 15, 50, tzinfo=dt.timezone.utc)
    assert all(p.startswith("/vsicurl?empty_dir=yes&url=http") for b in plan.scene.bands for p in b.paths)
    no_limit = describe(plan_job(parse_spec(_job(api, tmp_path, max_cloud_cover=None)), with_stats=False))
    assert "12 item(s) on 3 day(s)" in no_limit and "    2024-06-21  4 item(s)" in no_limit


def test_search_reads_like_the_same_tiles_on_disk(catalog):
    folder, _, api = catalog
    searched = _inputs(api)
    tiles = ("r0c0", "r0c1", "r1c0", "r1c1")  # the day's items in mosaic order: equal cloud, then by id
    local = InputSpec(bands={name: {"path": [str(folder / "z18" / t / f"{key}.tif") for t in tiles]}
                             for name, key in ASSETS.items()}, nodata=0, scale=0.0001)  # fmt: skip
    window = Window(300, 250, 260, 300)  # across the seams of all four tiles
    (a, valid_a), (b, valid_b) = (read_window(open_scene(s), window) for s in (searched, local))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(valid_a, valid_b)
    assert valid_a.all()


def test_a_day_in_two_utm_zones_lands_on_one_grid(catalog):
    _, _, api = catalog
    scene = open_scene(_inputs(api, date="2024-06-11", bbox=None), *_sample_aoi())
    folders = {"/".join(unquote(p).split("/")[-3:-1]) for b in scene.bands for p in b.paths}
    assert folders == {"z18/r0c0", "z19/r0c1", "z18/r1c0", "z19/r1c1"}
    assert scene.crs.to_epsg() == 32619  # the finest file's CRS: the 19N tiles are 10 m there
    _, valid = read_decimated(scene, ("red", "nir", "swir16"))
    assert valid.shape == (scene.height, scene.width) and scene.aoi is not None
    assert valid.sum() * scene.pixel_area_m2 > 0.99 * scene.aoi.area  # all the AOI seen, across the zone seam
    on_18n = open_scene(_inputs(api, date="2024-06-11").model_copy(update={"crs": "EPSG:32618", "resolution": 10}))
    with rasterio.open(SAMPLE / "B08.tif") as src:  # the 19N tiles' footprints reach past it: the sample's window
        sample = src.read(1).astype(np.float32) * 0.0001
        window = rasterio.windows.from_bounds(*src.bounds, on_18n.transform).round_offsets().round_lengths()
        assert (window.width, window.height) == (src.width, src.height)
        assert rasterio.windows.transform(window, on_18n.transform) == src.transform
    nir, valid = read_window(on_18n, window, ("nir",))
    west, east = slice(0, 384), slice(384, 768)
    np.testing.assert_array_equal(nir[0][:, west], sample[:, west])  # 18N: the same pixels
    both = valid[:, east]
    assert both.mean() > 0.95  # 19N, warped back: nearest twice, the same field pattern
    assert np.corrcoef(nir[0][:, east][both], sample[:, east][both])[0, 1] > 0.9


SCL = {"asset": "SCL", "kind": "s2_scl"}


def test_cloud_from_the_mask_asset_picks_the_clear_day(catalog, tmp_path):
    _, _, api = catalog
    job = _job(api, tmp_path, cloud_from_mask=True)
    job["inputs"]["mask"] = SCL
    plan = plan_job(parse_spec(job), with_stats=False)
    text = describe(plan)
    assert "    2024-06-01  4 item(s), 100% of the area, cloud 50.0% (mask)" in text  # its northern half is cloud
    assert (
        "d1-r0c0  EPSG:32618  cloud 10.0% (mask 100.0%)" in text
        and "d1-r1c0  EPSG:32618  cloud 10.0% (mask 0.0%)" in text
    )
    assert "  * 2024-06-11  4 item(s), 100% of the area, cloud 0.0% (mask)" in text
    assert plan.scene.search is not None and plan.scene.search.chosen == dt.date(2024, 6, 11)
    del job["inputs"]["mask"]
    with pytest.raises(InputError, match=r"^inputs\.stac_search\.cloud_from_mask needs inputs\.mask\.asset"):
        plan_job(parse_spec(job), with_stats=False)


def test_the_mask_asset_masks_the_day_mosaic(catalog):
    _, _, api = catalog
    scene = open_scene(InputSpec(stac_search=_search(api), assets=ASSETS, nodata=0, mask=SCL))
    assert scene.quality_mask is not None and len(scene.quality_mask.paths) == 4  # one SCL per item of the day
    _, valid = read_decimated(scene, ("red",))
    half = scene.height // 2
    assert not valid[: half - 2].any() and valid[half + 2 :].all()


def _sample_aoi() -> tuple[Any, str]:
    import shapely

    return shapely.box(*sample_bbox()), "EPSG:4326"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"datetime": "2020-01-01/2020-02-01"}, r"^the STAC search found no items with eo:cloud_cover <= 50 in "),
        ({"collections": ["nope"]}, r"^(STAC API .*check inputs\.stac_search|the STAC search found no items)"),
        ({"max_items": 5}, r"^the STAC search found more than 5 items: narrow .* \(--max-items\)$"),
        ({"date": "2024-06-21"}, r"^inputs\.stac_search\.date 2024-06-21 has no items; days found: 2024-06-01, "),
    ],
)
def test_search_mistakes_are_one_line(catalog, changes, message):
    _, _, api = catalog
    with pytest.raises(InputError, match=message) as err:
        open_scene(_inputs(api, **changes))
    assert "\n" not in str(err.value)


def test_unreachable_api_and_missing_asset_are_one_line(catalog):
    _, _, api = catalog
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(InputError, match=rf"^STAC API {dead}: .*; check inputs\.stac_search \(url,") as err:
        open_scene(_inputs(dead))
    assert "\n" not in str(err.value)
    spec = InputSpec(stac_search=_search(api), assets={"red": "B04", "nir": "B8A"})
    with pytest.raises(InputError, match=r"^STAC item d1-r0c0 has no asset 'B8A' \(band nir\); its assets: B02, "):
        open_scene(spec)


def test_cli_plan_prints_the_search_and_guards_max_items(catalog, write_spec, tmp_path, capsys):
    _, _, api = catalog
    path = write_spec(_job(api, tmp_path))
    assert main(["plan", str(path)]) == 0
    assert "* 2024-06-01  4 item(s)" in capsys.readouterr().out
    assert main(["plan", str(path), "--max-items", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "found more than 3 items" in err and "\n" not in err


def test_spec_needs_an_area_and_assets(tmp_path):
    job = _job("http://127.0.0.1:1", tmp_path, bbox=None)
    with pytest.raises(InputError, match=r"^inputs\.stac_search needs an area: give aoi, or inputs\.stac_search\.bbox"):
        plan_job(parse_spec(job), with_stats=False)  # before any request
    del job["inputs"]["assets"]
    with pytest.raises(SpecError, match=r"inputs\.stac_search or inputs\.stac and inputs\.assets go together"):
        parse_spec(job)
    with pytest.raises(SpecError, match=r"bbox must be \[west, south, east, north\]"):
        parse_spec(_job("http://127.0.0.1:1", tmp_path, bbox=[1, 1, 0, 0]))
    with pytest.raises(SpecError, match=r"exactly one of inputs\.bands .* files, stac or stac_search"):
        parse_spec({**job, "inputs": {**job["inputs"], "assets": ASSETS, "files": ["a.tif"]}})


def test_bearer_token_goes_to_the_api_and_to_gdal(catalog, monkeypatch, tmp_path):
    folder, _, _ = catalog
    monkeypatch.delenv("GDAL_HTTP_HEADERS", raising=False)  # restored (unset) after the test
    monkeypatch.delenv("GEOSEG_TEST_TOKEN", raising=False)
    with range_file_server(folder) as files, stac_api(*write_catalog(folder, files.url, tmp_path)) as api:
        spec = _inputs(api, signing="bearer", token_env="GEOSEG_TEST_TOKEN")  # a fresh URL: nothing cached by GDAL
        with pytest.raises(InputError, match=r"signing is bearer: set the environment variable GEOSEG_TEST_TOKEN"):
            open_scene(spec)
        monkeypatch.setenv("GEOSEG_TEST_TOKEN", "s3cret")
        read_window(open_scene(spec), Window(0, 0, 64, 64), ("red",))
        assert files.authorizations() == ["Bearer s3cret"]
