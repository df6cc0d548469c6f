"""The sample job through a real STAC API (rustac's server on 127.0.0.1) and a range-request file server equals the
same job on the same tiles on disk, layer by layer, and reads only the blocks its windows need (bytes counted in
the file server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import pytest
import rasterio
import yaml
from rasterio.windows import bounds as window_bounds

from geoseg.pipeline import RunResult, run_job
from geoseg.plan.job import plan_job
from geoseg.spec.job import parse_spec
from geoseg.testutils.stac_catalog import COLLECTION, block_bytes, header_bytes, make_tiles, sample_bbox, write_catalog
from geoseg.testutils.stac_server import range_file_server, rustac_binary, stac_api

pytestmark = pytest.mark.skipif(rustac_binary() is None, reason="rustac (the STAC API server) is not installed")

REPO = Path(__file__).resolve().parents[2]
ASSETS = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "rededge": "B05", "swir16": "B11"}
TILES = ("r0c0", "r0c1", "r1c0", "r1c1")
"""The 2024-06-01 items in mosaic order (equal cloud cover, then by id)."""
VOLATILE = ("seconds", "started", "finished", "update_time", "read_s", "model_s", "finish_s")


def _sample_job(inputs: dict[str, Any], out: Path) -> dict[str, Any]:
    raw = yaml.safe_load((REPO / "jobs" / "sample_fields.yaml").read_text())
    raw["inputs"] = {**inputs, "nodata": 0, "scale": 0.0001}
    raw["output"]["path"] = str(out)
    return raw


@pytest.fixture(scope="module")
def runs(ray_local, tmp_path_factory):
    """The sample job run through the API (bytes sent counted) and on the same tiles on disk."""
    folder = make_tiles(tmp_path_factory.mktemp("stac"))
    search = {"collections": [COLLECTION], "datetime": "2024-06-01/2024-06-30", "bbox": list(sample_bbox()),
              "max_cloud_cover": 50}  # fmt: skip
    with range_file_server(folder) as files, stac_api(*write_catalog(folder, files.url)) as api:
        spec = parse_spec(_sample_job({"stac_search": {"url": api, **search}, "assets": ASSETS}, folder / "api.gpkg"))
        files.reset()
        through_api = run_job(spec, progress=False)
        sent = files.sent()
        plan = plan_job(spec, with_stats=False)
    local = {"bands": {name: {"path": [str(folder / "z18" / t / f"{key}.tif") for t in TILES]}
                       for name, key in ASSETS.items()}}  # fmt: skip
    on_disk = run_job(parse_spec(_sample_job(local, folder / "local.gpkg")), progress=False)
    return folder, through_api, on_disk, sent, plan


def _layers(path: Path) -> dict[str, Any]:
    frames = {}
    for layer, _ in pyogrio.list_layers(path):
        if layer != "job":  # the job table holds the spec, which differs (API vs files) by design
            frame = pyogrio.read_dataframe(path, layer=layer)
            frames[layer] = frame.drop(columns=[c for c in frame.columns if any(v in c for v in VOLATILE)])
    return frames


def test_api_job_equals_the_job_on_files(runs):
    _, through_api, on_disk, _, _ = runs
    assert through_api.tiles_failed == on_disk.tiles_failed == 0
    api_layers, disk_layers = _layers(through_api.outputs.geopackage), _layers(on_disk.outputs.geopackage)
    assert set(api_layers) == set(disk_layers) >= {"fields", "crop_health", "tiles"}
    assert len(api_layers["fields"]) > 50
    for layer, frame in api_layers.items():
        other = disk_layers[layer]
        assert list(frame.columns) == list(other.columns), layer
        if "geometry" in frame.columns:
            assert [g.wkb for g in frame.geometry] == [g.wkb for g in other.geometry], layer
        attributes = [c for c in frame.columns if c != "geometry"]
        assert frame[attributes].equals(other[attributes]), layer
    for a, b in zip(_masks(through_api), _masks(on_disk), strict=True):
        with rasterio.open(a) as src_a, rasterio.open(b) as src_b:
            assert src_a.profile == src_b.profile
            np.testing.assert_array_equal(src_a.read(), src_b.read())


def _masks(result: RunResult) -> list[Path]:
    return sorted(Path(p) for p in result.outputs.masks)


def test_http_bytes_are_those_of_the_windows_read(runs):
    """Bytes sent <= 1.2 x the blocks of every window the job reads: each tile's read window (core + halo), one
    whole-scene pass in the driver (the valid-pixel check, scene statistics), and every file's header."""
    folder, _, _, sent, plan = runs
    band_files = [folder / "z18" / t / f"{ASSETS[name]}.tif" for name in plan.bands for t in TILES]
    every_file = [folder / "z18" / t / f"{key}.tif" for key in ASSETS.values() for t in TILES]
    needed = sum(header_bytes(f) for f in every_file) + sum(block_bytes(f) for f in band_files)
    for tile in plan.tiles:
        bounds = window_bounds(tile.read, plan.scene.transform)
        needed += sum(block_bytes(f, bounds) for f in band_files)
    total = sum(sent.values())
    assert set(sent) <= {f"z18/{t}/{key}.tif" for t in TILES for key in ASSETS.values()}  # that day's files only
    assert total <= 1.2 * needed, (total, needed)
    unused = [f"z18/{t}/B02.tif" for t in TILES]  # blue: no model of the job reads it, only its header is read
    assert all(sent[name] <= 2 * header_bytes(folder / name) + 32768 for name in unused), sent
