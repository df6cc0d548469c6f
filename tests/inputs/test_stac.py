"""STAC input: a local Item whose assets are the sample's files reads exactly like the band map."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pystac
import pytest
from rasterio.windows import Window

from geoseg.errors import InputError, SpecError
from geoseg.inputs.scene import open_scene, read_window
from geoseg.spec.job import InputSpec, load_spec, parse_spec

SAMPLE = Path(__file__).resolve().parents[2] / "jobs" / "sample"
WHEN = datetime(2016, 4, 2, 15, 50, tzinfo=timezone.utc)


def _item(folder: Path, with_qa: bool = False) -> Path:
    """An Item in ``folder``: B04 by a relative href (resolved against the Item), the others absolute."""
    (folder / "data").mkdir()
    (folder / "data" / "B04.tif").symlink_to(SAMPLE / "B04.tif")
    item = pystac.Item("s2-crop", None, None, WHEN, {})
    item.add_asset("B04", pystac.Asset("data/B04.tif", media_type=pystac.MediaType.GEOTIFF))
    for key in ("B08", "B05"):
        item.add_asset(key, pystac.Asset(str(SAMPLE / f"{key}.tif"), media_type=pystac.MediaType.GEOTIFF))
    if with_qa:  # any single-band raster on the grid serves as a 0/1 mask here: B8A's values are never 0
        item.add_asset("QA", pystac.Asset(str(SAMPLE / "B8A.tif")))
    path = folder / "item.json"
    path.write_text(json.dumps(item.to_dict(include_self_link=False)))
    return path


def _read(spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
    scene = open_scene(spec)
    return read_window(scene, Window(100, 200, 300, 250))


def test_stac_item_reads_like_the_band_map(tmp_path):
    stac = InputSpec(stac=str(_item(tmp_path)), assets={"red": "B04", "nir": "B08", "rededge": "B05"}, nodata=0)
    paths = {"red": "B04", "nir": "B08", "rededge": "B05"}
    plain = InputSpec(bands={name: {"path": str(SAMPLE / f"{key}.tif")} for name, key in paths.items()}, nodata=0)
    (a, valid_a), (b, valid_b) = _read(stac), _read(plain)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(valid_a, valid_b)
    assert valid_a.all() and a.any()
    scene = open_scene(stac)
    assert scene.band_names == ("red", "nir", "rededge") and scene.datetime == WHEN
    assert scene.band("red").paths == (str(tmp_path / "data" / "B04.tif"),)


def test_stac_asset_as_quality_mask(tmp_path):
    spec = InputSpec(
        stac=str(_item(tmp_path, with_qa=True)),
        assets={"red": {"asset": "B04", "band": 1}},
        mask={"asset": "QA", "kind": "binary"},
    )
    _, valid = _read(spec)
    assert not valid.any()  # every QA value is non-zero: all masked


def test_spec_paths_and_forms(tmp_path):
    item = _item(tmp_path)
    (tmp_path / "job.yaml").write_text(
        "inputs: {stac: item.json, assets: {red: B04, nir: B08}}\n"
        "models: [{type: crop_health}]\noutput: {path: out.gpkg}\n"
    )
    assert load_spec(tmp_path / "job.yaml").inputs.stac == str(item)
    base = {"models": [{"type": "crop_health"}], "output": {"path": "o.gpkg"}}
    with pytest.raises(SpecError, match=r"stac and inputs\.assets go together"):
        parse_spec({**base, "inputs": {"stac": "item.json"}})
    with pytest.raises(SpecError, match=r"exactly one of inputs\.bands"):
        parse_spec({**base, "inputs": {"stac": "i.json", "assets": {"red": "B04"}, "files": ["a.tif"]}})
    mask = {"asset": "QA", "kind": "binary"}
    with pytest.raises(SpecError, match=r"mask\.asset needs inputs\.stac"):
        parse_spec({**base, "inputs": {"files": ["a.tif"], "band_names": ["red"], "mask": mask}})


def test_missing_asset_or_item_is_a_clear_error(tmp_path):
    item = str(_item(tmp_path))
    with pytest.raises(InputError, match=r"no asset 'B99' \(band red\); its assets: B04, B05, B08"):
        open_scene(InputSpec(stac=item, assets={"red": "B99"}))
    with pytest.raises(InputError, match="cannot read STAC item"):
        open_scene(InputSpec(stac=str(tmp_path / "nope.json"), assets={"red": "B04"}))
    collection = pystac.Collection("c", "d", pystac.Extent(pystac.SpatialExtent([[0, 0, 1, 1]]),
                                                           pystac.TemporalExtent([[WHEN, None]])))  # fmt: skip
    (tmp_path / "collection.json").write_text(json.dumps(collection.to_dict(include_self_link=False)))
    with pytest.raises(InputError, match="not an Item"):
        open_scene(InputSpec(stac=str(tmp_path / "collection.json"), assets={"red": "B04"}))
