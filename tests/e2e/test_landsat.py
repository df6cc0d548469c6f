"""The cloudy Landsat 8 job end to end: clouds masked by the BQA band, fields under cloud not_observed."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import yaml
from PIL import Image
from rasterio.features import geometry_mask

from geoseg.pipeline import run_job
from geoseg.spec.job import load_spec

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def landsat_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("landsat")
    raw = yaml.safe_load((REPO / "jobs/landsat_fields.yaml").read_text())
    raw["output"]["path"] = str(folder / "landsat.gpkg")
    for band in raw["inputs"]["bands"].values():
        band["path"] = str(REPO / "jobs" / band["path"])
    raw["inputs"]["mask"]["path"] = str(REPO / "jobs" / raw["inputs"]["mask"]["path"])
    (folder / "job.yaml").write_text(yaml.safe_dump(raw))
    return folder, run_job(load_spec(folder / "job.yaml"), progress=False)


def _high_cloud() -> tuple[np.ndarray, rasterio.Affine]:
    with rasterio.open(REPO / "jobs/landsat/BQA.tif") as src:
        qa = src.read(1).astype(np.uint32)
        return ((qa >> 14) & 3) == 3, src.transform


def _cloud_share(polygons: gpd.GeoSeries) -> float:
    high, transform = _high_cloud()
    inside = geometry_mask(list(polygons), high.shape, transform, invert=True)
    return float(high[inside].mean()) if inside.any() else 0.0


def test_the_crop_is_cloudy():
    high, _ = _high_cloud()
    assert high.mean() > 0.05


def test_no_fields_and_no_stressed_zones_under_high_confidence_cloud(landsat_run):
    folder, result = landsat_run
    assert result.tiles_failed == 0
    fields = gpd.read_file(folder / "landsat.gpkg", layer="fields")
    zones = gpd.read_file(folder / "landsat.gpkg", layer="crop_health")
    assert len(fields) >= 10
    assert _cloud_share(fields.geometry) <= 0.05
    assert _cloud_share(zones[zones["class_name"] == "stressed"].geometry) <= 0.01


def test_fields_hidden_by_clouds_are_not_observed(landsat_run):
    folder, _ = landsat_run
    fields = gpd.read_file(folder / "landsat.gpkg", layer="fields")
    hidden = fields[fields["verdict"] == "not_observed"]
    seen = fields[fields["verdict"] != "not_observed"]
    assert len(hidden) > 0 and len(seen) > 0
    assert ((hidden["share_edge_masked"] >= 0.3) | (hidden["share_masked"] >= 0.3)).all()
    assert (seen["share_edge_masked"] < 0.3).all() and (seen["share_masked"] < 0.3).all()
    assert (hidden["share_edge_masked"] > 0).sum() >= 3  # fields that run on under a cloud


def test_slivers_between_clouds_are_dropped(landsat_run):
    """output.max_edge_masked 0.5: a region bounded by clouds over half its outline is a cloud gap, not a field."""
    folder, _ = landsat_run
    fields = gpd.read_file(folder / "landsat.gpkg", layer="fields")
    assert (fields["share_edge_masked"] < 0.5).all()
    assert ((fields["share_edge_masked"] >= 0.3) & (fields["verdict"] == "not_observed")).any()  # marked, kept


def test_quicklook_png_and_html(landsat_run):
    folder, _ = landsat_run
    fields = gpd.read_file(folder / "landsat.gpkg", layer="fields")
    with Image.open(folder / "landsat_quicklook.png") as image:
        assert image.size[0] >= 800 and image.mode == "RGB"
        colours = {c for _, c in image.getcolors(1 << 20) or []}
    assert (70, 70, 70) in colours and (225, 225, 235) in colours  # not_observed outlines, masked pixels
    page = (folder / "landsat_quicklook.html").read_text()
    assert page.count("<path ") == len(fields) and "data:image/png;base64," in page


def test_fiboa_output_reads_back_with_the_core_columns(landsat_run):
    folder, _ = landsat_run
    fields = gpd.read_file(folder / "landsat.gpkg", layer="fields")
    fiboa = gpd.read_parquet(folder / "landsat_fields.fiboa.parquet")
    core = ["id", "collection", "metrics:area", "metrics:perimeter", "determination:method", "geometry"]
    assert set(core) <= set(fiboa.columns) and len(fiboa) == len(fields)
    assert sorted(fiboa["id"].astype(int)) == sorted(fields["id"])
    assert set(fiboa["geoseg:verdict"]) == set(fields["verdict"])
    assert fiboa.crs == fields.crs
