"""A random-weight FTW U-Net through the whole pipeline on Ray: tiles, batched model actor, stitching, export.

The sample (jobs/sample) is one Sentinel-2 date, so its bands serve as both windows (planting and harvest). No real
FTW weights can be downloaded here: the network is random (its last layer balanced on the sample's pixels so that it
answers a patchwork of fields), so these tests check how its fields flow through geoseg, not their quality.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.windows import Window

from geoseg.models.ftw.variants import VARIANTS
from geoseg.pipeline import run_job
from geoseg.spec.job import parse_spec
from geoseg.testutils.ftw import random_ftw_state, write_ftw_checkpoint

pytestmark = pytest.mark.usefixtures("ray_local")

SAMPLE = Path(__file__).resolve().parents[2] / "jobs" / "sample"
BANDS = {"red": "B04", "green": "B03", "blue": "B02", "nir": "B08"}
CROP = 384


@pytest.fixture(scope="module")
def crop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample's top-left 384 x 384 px (10 m) of the four bands FTW reads."""
    folder = tmp_path_factory.mktemp("ftw_sample")
    for name in BANDS.values():
        with rasterio.open(SAMPLE / f"{name}.tif") as src:
            window = Window(0, 0, CROP, CROP)
            profile = {**src.profile, "width": CROP, "height": CROP, "transform": src.window_transform(window)}
            with rasterio.open(folder / f"{name}.tif", "w", **profile) as dst:
                dst.write(src.read(window=window))
    return folder


@pytest.fixture(scope="module")
def checkpoint(crop: Path) -> Path:
    variant = VARIANTS["ftw-3class"]
    dn = np.stack([rasterio.open(crop / f"{BANDS[b]}.tif").read(1)[:256, :256] for b in BANDS]).astype(np.float32)
    sample = np.concatenate([dn, dn]) / 3000  # FTW's input: DN / 3000, both windows the same date
    return write_ftw_checkpoint(crop / "ftw3.pth", variant, random_ftw_state(variant, seed=0, sample=sample))


def _run(folder: Path, checkpoint: Path, tile_size: int, out: Path, **model: str) -> gpd.GeoDataFrame:
    spec = parse_spec(
        {
            "name": f"ftw-{tile_size}",
            "inputs": {"bands": {k: {"path": f"{v}.tif"} for k, v in BANDS.items()}, "nodata": 0, "scale": 0.0001},
            "tiling": {"tile_size": tile_size},
            "models": [
                {
                    "type": "ftw",
                    "variant": "ftw-3class",
                    "checkpoint": str(checkpoint),
                    "windows": [["red", "green", "blue", "nir"], ["red", "green", "blue", "nir"]],
                    **model,
                }
            ],
            "output": {"path": str(out), "masks": True},
            "compute": {"actors": 1, "batch_size": 4},
        },
        folder,
    )
    result = run_job(spec, progress=False)
    return gpd.read_file(result.outputs.geopackage, layer="fields")


@pytest.fixture(scope="module")
def fields_256(crop: Path, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> gpd.GeoDataFrame:
    return _run(crop, checkpoint, 256, tmp_path_factory.mktemp("ftw_out") / "fields_256.gpkg")


def test_fields_do_not_overlap_and_carry_scores(fields_256: gpd.GeoDataFrame) -> None:
    fields = fields_256
    assert len(fields) > 20  # the balanced random net answers a patchwork, not one blob
    union = shapely.union_all(fields.geometry.values)
    assert union.area == pytest.approx(fields.geometry.area.sum(), rel=1e-9)  # no two polygons overlap
    assert fields.geometry.is_valid.all()
    score = next(c for c in fields.columns if "score" in c)
    assert fields[score].between(0, 1).all()


@pytest.mark.slow  # a second whole job (about 20 s here on 2 shared cores)
def test_same_fields_for_256_and_512_px_tiles(
    fields_256: gpd.GeoDataFrame, crop: Path, checkpoint: Path, tmp_path: Path
) -> None:
    """The halo (64 px, plus the 2 px given back from boundaries) covers what decides a core pixel, so the tiles
    agree: every field of one run has a field in the other with IoU >= 0.99 (the tolerance leaves room for an argmax
    tie that batch composition could flip; measured: all fields identical, IoU 1.0)."""
    small, large = fields_256, _run(crop, checkpoint, 512, tmp_path / "fields_512.gpkg")
    assert len(small) == len(large)
    points = gpd.GeoDataFrame(geometry=small.geometry.representative_point(), crs=small.crs)
    pairs = gpd.sjoin(points, large[["geometry"]], predicate="within")
    assert pairs.index.is_unique and len(pairs) == len(small)  # every field lies in exactly one field of the other run
    mine = small.geometry.loc[pairs.index].values
    theirs = large.geometry.loc[pairs["index_right"]].values
    iou = shapely.area(shapely.intersection(mine, theirs)) / shapely.area(shapely.union(mine, theirs))
    assert iou.min() >= 0.99


def test_classes_output_blends_tiles_into_a_class_cog(crop: Path, checkpoint: Path, tmp_path: Path) -> None:
    regions = _run(crop, checkpoint, 256, tmp_path / "classes.gpkg", output="classes")
    assert len(regions) > 0
    with rasterio.open(tmp_path / "classes_fields.tif") as src:
        classes = src.read(1)
    assert classes.shape == (CROP, CROP) and set(np.unique(classes)) <= {0, 1, 2, 3}
    assert (np.bincount(classes.ravel(), minlength=4)[1:] > 0).all()  # background, field and boundary all present


def test_delineate_anything_job_gives_scored_fields_that_do_not_overlap(crop: Path, tmp_path: Path) -> None:
    """A random-weight Delineate Anything-S (ultralytics format) on the sample crop: scored instances through Ray."""
    pytest.importorskip("ultralytics", reason="the delineate-anything extra is not installed")
    from copy import deepcopy

    import torch

    from geoseg.models.delineate_anything.network import build_da_net
    from geoseg.models.delineate_anything.variants import VARIANTS as DA_VARIANTS

    torch.manual_seed(0)
    checkpoint = tmp_path / "da_s.pt"
    torch.save({"model": deepcopy(build_da_net(DA_VARIANTS["DelineateAnything-S"])).half(), "ema": None}, checkpoint)
    spec = parse_spec(
        {
            "name": "da",
            "inputs": {"bands": {k: {"path": f"{v}.tif"} for k, v in BANDS.items() if k != "nir"}, "nodata": 0,
                       "scale": 0.0001},
            "tiling": {"tile_size": 256},
            "models": [{"type": "delineate_anything", "checkpoint": str(checkpoint), "confidence": 0.0}],
            "output": {"path": str(tmp_path / "da.gpkg"), "masks": False},
            "compute": {"actors": 1, "batch_size": 4},
        },
        crop,
    )  # fmt: skip
    fields = gpd.read_file(run_job(spec, progress=False).outputs.geopackage, layer="fields")
    assert len(fields) > 0
    union = shapely.union_all(fields.geometry.values)
    assert union.area == pytest.approx(fields.geometry.area.sum(), rel=1e-9)
    score = next(c for c in fields.columns if "score" in c)
    assert fields[score].between(0, 1).all()
