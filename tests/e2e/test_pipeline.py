"""End to end through a real local Ray: synthetic scenes with known answers, and the real Sentinel-2 sample."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import yaml

from geoseg.errors import OutputExistsError, TileFailedError
from geoseg.pipeline import run_job
from geoseg.run.workdir import tile_path
from geoseg.spec.job import load_spec, parse_spec
from geoseg.testutils.faults import corrupt_nir_bands
from geoseg.testutils.gis import OGRINFO, QGIS_PROCESS, ogrinfo_summary, qgis_check_validity
from geoseg.testutils.scenes import field_job, write_field_scene

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("ray_local")


def _write_band(path: Path, values: np.ndarray, transform, crs="EPSG:32633") -> None:
    profile = dict(driver="GTiff", width=values.shape[1], height=values.shape[0], count=1, dtype=values.dtype.name)
    with rasterio.open(path, "w", crs=crs, transform=transform, tiled=True, compress="deflate", **profile) as dst:
        dst.write(values, 1)


@pytest.fixture(scope="module")
def field_scene(tmp_path_factory):
    return write_field_scene(tmp_path_factory.mktemp("fields"), 1100, 900, cell=150, seed=3)


def test_left_half_vegetation_areas_match(tmp_path):
    """A scene whose left half is healthy vegetation: zone areas equal the half-scene area within a pixel."""
    from affine import Affine

    h, w = 200, 300
    red = np.full((h, w), 2000, np.uint16)
    nir = np.full((h, w), 2500, np.uint16)
    red[:, : w // 2], nir[:, : w // 2] = 500, 4500  # NDVI 0.8 left, 0.11 right
    transform = Affine(10, 0, 600000, 0, -10, 5200000)
    _write_band(tmp_path / "red.tif", red, transform)
    _write_band(tmp_path / "nir.tif", nir, transform)
    spec = parse_spec(
        {
            "inputs": {"bands": {"red": {"path": "red.tif"}, "nir": {"path": "nir.tif"}}, "scale": 0.0001},
            "tiling": {"tile_size": 64, "halo": 4},
            "models": [{"type": "crop_health", "smoothing_px": 0}],
            "output": {"path": "out.gpkg"},
        },
        base=tmp_path,
    )
    result = run_job(spec, progress=False)
    zones = gpd.read_file(tmp_path / "out.gpkg", layer="crop_health")
    assert result.tiles_failed == 0
    assert sorted(zones["class_name"]) == ["healthy", "non_vegetation"]
    half = h * (w // 2) * 100.0
    for area in zones.geometry.area:
        assert abs(area - half) <= 100.0
    assert zones.crs.to_epsg() == 32633
    assert zones.set_index("class_name").loc["healthy", "ndvi_mean"] == pytest.approx(0.8, abs=1e-3)


def _matched_iou(found: list[shapely.Geometry], truth: list[shapely.Geometry]) -> list[float]:
    tree = shapely.STRtree(found)
    ious = []
    for t in truth:
        candidates = [found[i] for i in tree.query(t)]
        ious.append(max((c.intersection(t).area / c.union(t).area for c in candidates), default=0.0))
    return ious


@pytest.mark.parametrize("tile_size", [256, 512, 1024])
def test_known_fields_one_polygon_each(tmp_path, field_scene, tile_size):
    """Fields crossing tile edges and corners, some larger than a tile: each comes out once, whole."""
    spec = parse_spec(field_job(field_scene, tmp_path / "fields.gpkg", tile_size=tile_size))
    run_job(spec, progress=False)
    fields = gpd.read_file(tmp_path / "fields.gpkg", layer="fields")
    truth = field_scene.truth_polygons()
    assert len(fields) == len(truth)
    assert min(_matched_iou(list(fields.geometry), truth)) >= 0.9
    union = shapely.union_all(fields.geometry.values)
    assert union.area == pytest.approx(fields.geometry.area.sum(), rel=1e-9)  # no two polygons overlap
    assert fields.geometry.is_valid.all()
    (tmp_path / "canonical.wkt").write_text("\n".join(g.wkt for g in fields.sort_values("id").geometry))


def test_known_fields_same_for_every_tile_size(tmp_path, field_scene):
    outputs = []
    for tile_size in (256, 1024):
        spec = parse_spec(field_job(field_scene, tmp_path / f"f{tile_size}.gpkg", tile_size=tile_size))
        run_job(spec, progress=False)
        outputs.append(gpd.read_file(tmp_path / f"f{tile_size}.gpkg", layer="fields").sort_values("id"))
        with rasterio.open(tmp_path / f"f{tile_size}_fields.tif") as src:
            outputs[-1].attrs["ids"] = src.read(1)
    a, b = outputs
    assert list(a["id"]) == list(b["id"])
    for ga, gb in zip(a.geometry, b.geometry, strict=True):
        assert ga.symmetric_difference(gb).area == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_array_equal(a.attrs["ids"], b.attrs["ids"])


def test_id_raster_matches_polygons(tmp_path, field_scene):
    spec = parse_spec(field_job(field_scene, tmp_path / "f.gpkg", tile_size=256))
    run_job(spec, progress=False)
    fields = gpd.read_file(tmp_path / "f.gpkg", layer="fields")
    with rasterio.open(tmp_path / "f_fields.tif") as src:
        ids = src.read(1)
        assert src.crs.to_epsg() == 32633 and src.dtypes[0] == "uint32"
    counts = np.bincount(ids.ravel())
    for row in fields.itertuples():
        assert counts[row.id] == row.pixels


def test_layers_streamed_in_batches_equal_one_batch(tmp_path, field_scene, monkeypatch):
    """The export streams each layer from the spool of final objects; batch size changes nothing written."""
    import geoseg.export.layers

    outputs = []
    for batch in (geoseg.export.layers.EXPORT_BATCH, 7):
        monkeypatch.setattr(geoseg.export.layers, "EXPORT_BATCH", batch)
        raw = field_job(field_scene, tmp_path / f"b{batch}.gpkg", tile_size=256)
        raw["models"].append({"type": "crop_health", "name": "health", "indices": ["ndvi"], "classify_by": "ndvi"})
        run_job(parse_spec(raw), progress=False)
        layers = {name: gpd.read_file(tmp_path / f"b{batch}.gpkg", layer=name) for name in ("fields", "health")}
        with rasterio.open(tmp_path / f"b{batch}_fields.tif") as src:
            outputs.append((layers, src.read(1)))
        assert not list((tmp_path / f"b{batch}.work").glob("objects.*"))  # spools removed after the export
    (one, ids_one), (many, ids_many) = outputs
    assert len(one["fields"]) == len(field_scene.boxes) > 7 and "verdict" in one["fields"]
    for name in one:
        assert one[name].drop(columns="geometry").equals(many[name].drop(columns="geometry"))
        assert list(shapely.to_wkb(one[name].geometry.values)) == list(shapely.to_wkb(many[name].geometry.values))
    np.testing.assert_array_equal(ids_one, ids_many)


def _sample_spec(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load((REPO / "jobs" / "sample_fields.yaml").read_text())
    for key, value in changes.items():
        section, name = key.split("__")
        raw[section][name] = value
    raw["output"]["path"] = str(tmp_path / "sample.gpkg")
    for band in raw["inputs"]["bands"].values():
        band["path"] = str(REPO / "jobs" / band["path"])
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """The real sample job, run once for the tests that inspect its outputs."""
    folder = tmp_path_factory.mktemp("sample")
    return folder, run_job(load_spec(_sample_spec(folder)), progress=False)


def test_real_sample_outputs(sample_run):
    tmp_path, result = sample_run
    assert result.tiles_failed == 0
    layers = {name: gpd.read_file(tmp_path / "sample.gpkg", layer=name) for name in ("fields", "crop_health", "tiles")}
    assert all(gdf.crs.to_epsg() == 32618 for gdf in layers.values())
    assert len(layers["fields"]) > 50 and len(layers["crop_health"]) > 50
    assert set(layers["tiles"]["status"]) == {"done"}
    fields = layers["fields"]
    assert fields["ndvi_mean"].between(0.08, 1.0).all()  # the delineator's fields: bare soil to green crops
    assert (fields["ndvi_mean"] < 0.3).sum() > 10 and (fields["ndvi_mean"] > 0.5).sum() > 10
    shares = fields[[f"share_{c}" for c in ("non_vegetation", "stressed", "moderate", "healthy")]].sum(axis=1)
    assert np.allclose(shares, 1.0, atol=1e-3)
    for column in ("ndvi_median", "ndvi_p10", "ndre_mean", "ndre_median", "ndre_p10", "share_masked", "verdict"):
        assert column in fields, column
    assert (fields["ndvi_p10"] <= fields["ndvi_median"]).all()
    assert set(fields["verdict"]) <= {"healthy", "watch", "stressed", "bare", "not_observed"}
    assert fields["verdict"].nunique() >= 2
    with sqlite3.connect(tmp_path / "sample.gpkg") as db:
        (qml,) = db.execute("SELECT styleQML FROM layer_styles WHERE f_table_name = 'fields'").fetchone()
    assert 'attr="verdict"' in qml and 'value="not_observed"' in qml  # outlines coloured by verdict
    assert (tmp_path / "sample_quicklook.png").stat().st_size > 10_000
    with rasterio.open(REPO / "jobs/sample/B04.tif") as ref, rasterio.open(tmp_path / "sample_crop_health.tif") as cog:
        assert cog.crs == ref.crs and cog.transform == ref.transform and cog.shape == ref.shape
        assert cog.colormap(1)[4][:3] == (26, 152, 80)


def test_class_raster_independent_of_tile_size(tmp_path):
    rasters = []
    for tile_size in (128, 384):
        folder = tmp_path / str(tile_size)
        folder.mkdir()
        run_job(load_spec(_sample_spec(folder, tiling__tile_size=tile_size)), progress=False)
        with rasterio.open(folder / "sample_crop_health.tif") as src:
            rasters.append(src.read(1))
    np.testing.assert_array_equal(rasters[0], rasters[1])


def test_existing_output_is_kept_without_overwrite(tmp_path):
    job = _sample_spec(tmp_path)
    (tmp_path / "sample.gpkg").write_text("precious")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_job(load_spec(job), progress=False)
    assert (tmp_path / "sample.gpkg").read_text() == "precious"


def test_resume_recomputes_only_missing_tiles(tmp_path, field_scene):
    spec = parse_spec(field_job(field_scene, tmp_path / "f.gpkg", tile_size=256))
    first = run_job(spec, progress=False)
    before = gpd.read_file(tmp_path / "f.gpkg", layer="fields")
    work = tmp_path / "f.work"
    tile_path(work, "r0001_c0001").unlink()
    tile_path(work, "r0002_c0003").unlink()
    second = run_job(spec, overwrite=True, resume=True, progress=False)
    assert second.tiles_resumed == first.tiles_done - 2
    tiles = gpd.read_file(tmp_path / "f.gpkg", layer="tiles").set_index("tile_id")
    assert tiles.loc["r0001_c0001", "status"] == "done" and tiles.loc["r0000_c0000", "status"] == "resumed"
    after = gpd.read_file(tmp_path / "f.gpkg", layer="fields")
    assert len(after) == len(before)
    assert shapely.union_all(after.geometry.values).equals(shapely.union_all(before.geometry.values))
    assert list(after["id"]) == list(before["id"]) and list(after["pixels"]) == list(before["pixels"])


def test_failing_tiles_are_reported_not_silent(tmp_path, field_scene):
    """Corrupt pixel data in one mosaic file: its tiles fail after retries, the job fails loudly, outputs say which."""
    raw = field_job(field_scene, tmp_path / "f.gpkg", tile_size=256, max_retries=1)
    raw["inputs"]["bands"] = corrupt_nir_bands(field_scene.red, field_scene.nir, tmp_path / "scene")
    with pytest.raises(TileFailedError, match="tiles failed"):
        run_job(parse_spec(raw), progress=False)
    tiles = gpd.read_file(tmp_path / "f.gpkg", layer="tiles")
    failed = tiles[tiles["status"] == "failed"]
    assert 0 < len(failed) < len(tiles)
    assert (failed["attempts"] == 2).all()
    assert failed["error"].str.len().gt(0).all()


def test_fractional_gpu_actors_fall_back_to_cpu(tmp_path, field_scene):
    """Two actors sharing the one logical GPU are both scheduled; without CUDA they run on the CPU."""
    spec = parse_spec(field_job(field_scene, tmp_path / "f.gpkg", tile_size=512, actors=2, gpus_per_actor=0.5))
    result = run_job(spec, progress=False)
    assert result.device == "cpu" and result.tiles_failed == 0


@pytest.mark.skipif(OGRINFO is None, reason="ogrinfo (gdal-bin) is not installed")
def test_real_sample_opens_cleanly_in_gdal(sample_run):
    folder, _ = sample_run
    proc = ogrinfo_summary(folder / "sample.gpkg")
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
    for layer in ("fields", "crop_health", "tiles"):
        assert f"Layer name: {layer}" in proc.stdout
    assert 'ID["EPSG",32618]' in proc.stdout
    info = subprocess.run(["gdalinfo", str(folder / "sample_fields.tif")], capture_output=True, text=True, check=True)
    assert "LAYOUT=COG" in info.stdout and "Origin = (438940.000000000000000,4178820.000000000000000)" in info.stdout


@pytest.mark.skipif(QGIS_PROCESS is None, reason="QGIS is not installed (apt-get install qgis)")
@pytest.mark.parametrize("layer", ["fields", "crop_health"])
def test_real_sample_layers_valid_in_qgis(sample_run, layer):
    folder, _ = sample_run
    results = qgis_check_validity(folder / "sample.gpkg", layer, folder)
    assert results["INVALID_COUNT"] == 0 and results["ERROR_COUNT"] == 0
    assert results["VALID_COUNT"] == len(gpd.read_file(folder / "sample.gpkg", layer=layer))


def test_aoi_and_output_crs(tmp_path):
    """Only tiles touching the AOI run, nothing comes out beyond it, and layers are reprojected on request."""
    job = _sample_spec(tmp_path, output__crs="EPSG:4326")
    raw = yaml.safe_load(job.read_text())
    raw["aoi"] = {"path": str(REPO / "jobs/sample/aoi.geojson")}
    job.write_text(yaml.safe_dump(raw))
    run_job(load_spec(job), progress=False)
    aoi = gpd.read_file(REPO / "jobs/sample/aoi.geojson").geometry.union_all()
    fields = gpd.read_file(tmp_path / "sample.gpkg", layer="fields")
    tiles = gpd.read_file(tmp_path / "sample.gpkg", layer="tiles")
    assert fields.crs.to_epsg() == 4326 and tiles.crs.to_epsg() == 4326
    assert len(fields) > 0 and fields.geometry.within(aoi.buffer(1e-4)).all()
    assert all(tiles.geometry.intersects(aoi))
    utm = fields.to_crs(32618)  # areas are measured in metres whatever the output CRS
    assert np.allclose(utm.geometry.area, fields["area_m2"], rtol=0.02)
