"""The field delineator on a synthetic farmland scene with a known answer, its tile-size property, and read
windows on the real sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio.features
from affine import Affine
from scipy import ndimage

from geoseg.errors import SpecError
from geoseg.inputs.tiles import Tile, TileGrid
from geoseg.models.base import SceneInfo
from geoseg.models.fields.delineator import (
    FieldDelineator,
    MergeRule,
    _drop_outer_strips,
    _merge_weak_boundaries,
    block_mean,
    working_block,
)
from geoseg.plan.job import model_infos
from geoseg.spec.job import FieldDelineatorSpec, parse_spec
from geoseg.stitch.stitcher import LayerStitcher, tile_layer
from geoseg.testutils.farmland import SPECTRA, Farmland, farmland

SAMPLE = Path(__file__).resolve().parents[2] / "jobs" / "sample"

HALO = FieldDelineatorSpec(type="field_delineator").receptive_field


@pytest.fixture(scope="module")
def scene() -> Farmland:
    return farmland()


def _model(**params: object) -> FieldDelineator:
    return FieldDelineator(FieldDelineatorSpec(type="field_delineator", **params))


def _best_iou(truth: np.ndarray, labels: np.ndarray) -> tuple[int, float]:
    ids, counts = np.unique(labels[truth], return_counts=True)
    best = int(ids[np.argmax(counts)])
    if best == 0:
        return 0, 0.0
    found = labels == best
    return best, float((truth & found).sum() / (truth | found).sum())


def test_every_field_found_once_woods_and_pond_left_out(scene: Farmland) -> None:
    labels = _model().delineate(scene.pixels, np.ones(scene.fields.shape, bool)).labels
    matched = []
    for field in range(1, int(scene.fields.max()) + 1):
        label, iou = _best_iou(scene.fields == field, labels)
        assert iou >= 0.85, f"field {field}: IoU {iou:.2f}"
        matched.append(label)
    assert len(set(matched)) == len(matched), "two true fields share one region (the hedge-less pair fused?)"
    assert set(np.unique(labels)) - {0} == set(matched), "a region that is no field"
    assert (labels[scene.woods] > 0).mean() < 0.02
    assert (labels[scene.pond] > 0).mean() < 0.02


def test_without_swir_the_visible_rule_keeps_woods_and_water_out(scene: Farmland) -> None:
    labels = _model(use_swir=False).delineate(scene.pixels[:3], np.ones(scene.fields.shape, bool)).labels
    for field in range(1, int(scene.fields.max()) + 1):
        assert _best_iou(scene.fields == field, labels)[1] >= 0.85
    assert (labels[scene.woods | scene.pond] > 0).mean() < 0.02


def _patch_and_wood(patch: tuple[float, ...], wood: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bare soil with a patch (left) and a wood (right), each ringed by dark lanes; bands green, red, NIR, SWIR.
    Returns the pixels and the two masks."""
    shape = (60, 120)
    patch_mask, wood_mask = np.zeros(shape, bool), np.zeros(shape, bool)
    patch_mask[10:50, 8:52], wood_mask[10:50, 68:112] = True, True
    soil = (0.11, 0.13, 0.20, 0.28)
    pixels = np.empty((4, *shape), np.float32)
    for band in range(4):
        pixels[band] = np.select([patch_mask, wood_mask], [patch[band], wood[band]], soil[band])
    pixels[:, [5, 55], :] = pixels[:, :, [4, 60, 116]] = 0.05  # dark lanes around the patch and the wood
    return pixels, patch_mask, wood_mask


def _found_share(labels: np.ndarray, mask: np.ndarray, *, inner: bool = False) -> float:
    """Share of ``mask`` inside a region; ``inner``: 3 px in from its rim (the rim mixes with the soil)."""
    if inner:
        mask = ndimage.binary_erosion(mask, iterations=3)
    return float((labels[mask] > 0).mean())


DARK_IN_SWIR = {  # reflectance of the field and of a wood as dark in SWIR (green, red, NIR, SWIR); the rule off
    # Landsat TOA: a dense green crop reads 0.13 in SWIR, as dark as a wood, but brighter in NIR (0.25 vs 0.18)
    "dense green crop": ((0.07, 0.04, 0.25, 0.13), (0.05, 0.04, 0.18, 0.13), {"green_nir_min": 0.3}),
    # Landsat TOA under haze: bare soil reads 0.12 in SWIR, but dry (NDMI -0.09 where the wood's is 0.2)
    "dry soil under haze": ((0.09, 0.07, 0.10, 0.12), (0.05, 0.04, 0.18, 0.12), {"dry_swir_min": 1.0}),
}


@pytest.mark.parametrize("case", DARK_IN_SWIR)
def test_a_field_dark_in_swir_is_a_field_a_wood_as_dark_is_not(case: str) -> None:
    field_reflectance, wood_reflectance, rule_off = DARK_IN_SWIR[case]
    pixels, field, wood = _patch_and_wood(field_reflectance, wood_reflectance)
    valid = np.ones(field.shape, bool)
    labels = _model(min_seed_m2=500).delineate(pixels, valid).labels
    assert _found_share(labels, field) > 0.9
    assert _found_share(labels, wood, inner=True) < 0.02
    without_rule = _model(min_seed_m2=500, **rule_off).delineate(pixels, valid).labels
    assert _found_share(without_rule, field, inner=True) < 0.02


def _window(pixels: np.ndarray, tile: Tile) -> tuple[np.ndarray, np.ndarray]:
    """A read window of a (C, H, W) stack, zero and invalid past the scene."""
    _, h, w = pixels.shape
    size = int(tile.read.height)
    out = np.zeros((pixels.shape[0], size, size), np.float32)
    valid = np.zeros((size, size), bool)
    r0, c0 = int(tile.read.row_off), int(tile.read.col_off)
    rs, cs, re_, ce = max(r0, 0), max(c0, 0), min(r0 + size, h), min(c0 + size, w)
    out[:, rs - r0 : re_ - r0, cs - c0 : ce - c0] = pixels[:, rs:re_, cs:ce]
    valid[rs - r0 : re_ - r0, cs - c0 : ce - c0] = True
    return out, valid


DUNE_GRASS = (0.15, 0.165, 0.20, 0.29)  # sparse grass on sand behind a beach (S2 TOA): NDVI 0.096, bright in SWIR


def test_dune_grass_on_sand_is_not_a_field_bare_soil_is() -> None:
    """Below the NDVI floor (0.10): dune grass reads 0.09-0.10; a patch of dark bare soil (0.23) stays a field."""
    model = _model(min_seed_m2=500)
    pixels, dunes, _ = _patch_and_wood(DUNE_GRASS, SPECTRA["wood"])
    valid = np.ones(dunes.shape, bool)
    assert _found_share(model.delineate(pixels, valid).labels, dunes, inner=True) < 0.02
    assert _found_share(_model(min_seed_m2=500, bare_ndvi_min=0.08).delineate(pixels, valid).labels, dunes) > 0.9
    soil_pixels, soil, _ = _patch_and_wood(SPECTRA["dark_bare"], SPECTRA["wood"])
    assert _found_share(model.delineate(soil_pixels, valid).labels, soil) > 0.9


def _tiled_fields(scene: Farmland, tile_size: int) -> list[np.ndarray]:
    """Field masks after tiling and stitching, as the pipeline does it (tile_layer + LayerStitcher)."""
    model = _model()
    shape = scene.fields.shape
    grid = TileGrid(shape[1], shape[0], tile_size, HALO)
    stitcher = LayerStitcher(grid, model.merge_min_agreement)
    for tile in grid:
        pixels, valid = _window(scene.pixels, tile)
        layer, _ = tile_layer(model.delineate(pixels, valid), tile)
        stitcher.add(tile, layer)
    return [
        rasterio.features.geometry_mask([obj.geometry], shape, Affine.identity(), invert=True)
        for obj in stitcher.objects()
    ]


def test_same_fields_for_tile_sizes_256_512_1024(scene: Farmland) -> None:
    """Tolerance: the same number of fields, and each field of one tiling matches one of every other with
    IoU >= 0.97 (graph steps near tile edges may move a boundary pixel; no field is split or fused)."""
    tilings = {size: _tiled_fields(scene, size) for size in (256, 512, 1024)}
    reference = tilings[1024]
    assert len(reference) == int(scene.fields.max())
    for size in (256, 512):
        assert len(tilings[size]) == len(reference), f"tile size {size}: {len(tilings[size])} fields"
        for mask in reference:
            best = max(float((mask & other).sum() / (mask | other).sum()) for other in tilings[size])
            assert best >= 0.97, f"tile size {size}: a field matches at IoU {best:.3f}"


def test_spec_defaults_and_halo_check() -> None:
    spec = FieldDelineatorSpec(type="field_delineator")
    assert spec.bands == ("green", "red", "nir", "swir16")
    assert FieldDelineatorSpec(type="field_delineator", use_swir=False).bands == ("green", "red", "nir")
    job = {
        "name": "x",
        "inputs": {"bands": {b: {"path": f"{b}.tif"} for b in spec.bands}},
        "tiling": {"tile_size": 256, "halo": 8},
        "models": [{"type": "field_delineator"}],
        "output": {"path": "out.gpkg"},
    }
    with pytest.raises(SpecError, match=r"raise tiling\.halo"):
        parse_spec(job)


def test_regions_join_across_a_weak_boundary_not_across_a_strong_one() -> None:
    """Two regions whose shared boundary is calm over most of its length are one; a boundary strong along its whole
    length (a lane) keeps them apart; 0 (not a field) never joins."""
    labels = np.zeros((10, 12), np.int32)
    labels[:, 1:6], labels[:, 6:11] = 1, 2
    strength = np.zeros(labels.shape, np.float32)
    strength[:, 5:7] = 0.02  # a lane along the whole boundary
    assert set(np.unique(_merge_weak_boundaries(labels, strength, MergeRule(0.012, 0.5)))) == {0, 1, 2}
    strength[3:, 5:7] = 0.005  # calm over 70 % of it: a streak inside one field
    assert set(np.unique(_merge_weak_boundaries(labels, strength, MergeRule(0.012, 0.5)))) == {0, 1}
    assert set(np.unique(_merge_weak_boundaries(labels, strength, MergeRule(0.012, 0.1)))) == {0, 1}
    assert set(np.unique(_merge_weak_boundaries(labels, strength, MergeRule(0.012, 0.9)))) == {0, 1, 2}


def test_seeds_follow_the_pixel_size() -> None:
    """A 6 x 6 px field is 0.36 ha at 10 m (below min_seed_m2: it joins no seed) and 3.2 ha at 30 m, where seeds are
    not eroded either (a hedge is narrower than a 30 m pixel)."""
    pixels = np.empty((4, 20, 20), np.float32)
    pixels[:] = np.array([0.05, 0.04, 0.18, 0.10], np.float32)[:, None, None]  # wood all round
    pixels[:, 7:13, 7:13] = np.array([0.11, 0.13, 0.20, 0.28], np.float32)[:, None, None]  # bare soil
    valid = np.ones((20, 20), bool)
    spec = FieldDelineatorSpec(type="field_delineator")
    fine, coarse = FieldDelineator(spec, pixel_size_m=10), FieldDelineator(spec, pixel_size_m=30)
    assert (fine.seed_erode_px, coarse.seed_erode_px) == (1, 0)
    assert (fine.min_seed_px, coarse.min_seed_px) == (20, 2)
    assert fine.delineate(pixels, valid).labels.max() == 0
    assert (coarse.delineate(pixels, valid).labels[8:12, 8:12] > 0).all()


def test_necks_shallower_than_a_pixel_and_a_half_do_not_split_a_field_at_30_m() -> None:
    """20 m is 2 px at 10 m but 0.7 px at 30 m, where the distance map climbs 1, 1.41, 2: a notch of one pixel in a
    field's outline would seed it apart. The floor keeps such a field whole; a real neck still splits."""
    from geoseg.models.fields.delineator import MIN_NECK_DEPTH_PX
    from geoseg.models.fields.edges import calm_seeds

    spec = FieldDelineatorSpec(type="field_delineator")
    coarse = FieldDelineator(spec, pixel_size_m=30)
    assert FieldDelineator(spec, pixel_size_m=10).neck_depth_px == 2.0
    assert coarse.neck_depth_px == MIN_NECK_DEPTH_PX
    assert FieldDelineator(FieldDelineatorSpec(type="field_delineator", neck_depth_m=0), 30).neck_depth_px == 0
    field = np.zeros((14, 26), bool)
    field[2:12, 2:12] = field[3:11, 12:24] = True  # a 10 px wide half and an 8 px wide half (tops 5 and 4)
    flat = np.zeros(field.shape)  # no line strength: ties settle by flooding order
    notched = field.copy()
    notched[3, 12:14] = notched[10, 12:14] = False  # a notch of one pixel on each side: the map dips 4 -> 3
    assert calm_seeds(notched, 0, 20 / 30, 2, flat).max() == 2, "the unfloored depth no longer splits: the test is moot"
    assert calm_seeds(notched, 0, coarse.neck_depth_px, 2, flat).max() == 1
    necked = field.copy()
    necked[3:6, 12:14] = necked[8:11, 12:14] = False  # a neck 2 px wide: the map dips 4 -> 1
    assert calm_seeds(necked, 0, coarse.neck_depth_px, 2, flat).max() == 2


def _split_pairs(labels: np.ndarray, other: np.ndarray) -> int:
    """How many more (label, other label) pairs the two partitions share than ``labels`` has regions: 0 when no
    region of ``labels`` is cut by ``other`` (both ways checked by calling twice)."""
    both = (labels > 0) & (other > 0)
    pairs = np.unique(np.stack([labels[both], other[both]]), axis=1)
    return pairs.shape[1] - len(np.unique(pairs[0]))


def test_read_windows_cut_the_real_sample_alike_inside_their_cores() -> None:
    """On the real Sentinel-2 sample, each read window of a 512 px tile with the delineator's halo gives the same
    regions in its core as the whole 768 px sample does. Before the line strength broke the ties on the distance
    map's plateaus, the seeds' watershed settled them by flooding order: 8 to 19 regions per core were cut
    otherwise, and fields came out different for other tile sizes."""
    import rasterio
    from rasterio.enums import Resampling

    def band(name: str) -> np.ndarray:  # 20 m bands onto the 10 m grid, as any consistent read does
        with rasterio.open(SAMPLE / f"{name}.tif") as src:
            return src.read(1, out_shape=(768, 768), resampling=Resampling.bilinear).astype(np.float32) * 1e-4

    pixels = np.stack([band(name) for name in ("B03", "B04", "B08", "B11")])
    valid = pixels[2] > 0
    model = FieldDelineator(FieldDelineatorSpec(type="field_delineator"), pixel_size_m=10)
    whole = model.delineate(pixels, valid).labels
    read, last = 512 + 2 * HALO, 768 - (512 + 2 * HALO)
    for r0, c0 in ((0, 0), (last // 2, last // 2), (last, 0), (0, last), (last, last)):
        window = (slice(r0, r0 + read), slice(c0, c0 + read))
        core = model.delineate(pixels[:, window[0], window[1]], valid[window]).labels[HALO:-HALO, HALO:-HALO]
        same = whole[r0 + HALO : r0 + read - HALO, c0 + HALO : c0 + read - HALO]
        assert ((core > 0) == (same > 0)).all(), f"window at {(r0, c0)}: fields found in one and not the other"
        cuts = max(_split_pairs(core, same), _split_pairs(same, core))
        assert cuts <= 1, f"window at {(r0, c0)}: {cuts} regions cut otherwise than in the whole sample"


def test_one_colour_joins_across_a_line_of_middling_strength_on_digital_numbers() -> None:
    """Rows or a track inside one field (middling strength, one colour both sides) join; a change of colour across
    the same line does not."""
    labels = np.zeros((10, 12), np.int32)
    labels[:, 1:6], labels[:, 6:11] = 1, 2
    strength = np.zeros(labels.shape, np.float32)
    strength[:, 5:7] = 0.1
    colours = np.full((3, 10, 12), -1.5, np.float32)
    rule = MergeRule(0.08, 0.75, similar_edge_max=0.15, colour_max=0.03)
    assert set(np.unique(_merge_weak_boundaries(labels, strength, rule, colours))) == {0, 1}
    colours[1, :, 6:] += 0.2  # the right region is another crop
    assert set(np.unique(_merge_weak_boundaries(labels, strength, rule, colours))) == {0, 1, 2}


def _digital_numbers(scene: Farmland, gain: float) -> tuple[FieldDelineator, np.ndarray]:
    """The farmland's green, red, NIR as uncalibrated digital numbers (``gain`` per reflectance unit), and a
    delineator that knows the scene's percentiles (as the plan computes them)."""
    pixels = np.round(scene.pixels[:3] * gain).astype(np.float32)
    percentiles = {b: np.percentile(pixels[i], np.arange(101)) for i, b in enumerate(("green", "red", "nir"))}
    info = SceneInfo(("green", "red", "nir"), "", (10.0, 10.0), 100.0, percentiles, {}, reflectance=False)
    return FieldDelineator(FieldDelineatorSpec(type="field_delineator", use_swir=False), 10.0, info), pixels


def test_digital_numbers_give_the_same_fields_whatever_their_gain(scene: Farmland) -> None:
    """No absolute level: the same scene as 8-bit digital numbers at two gains gives the same fields, each true
    field found, the pond left out."""
    valid = np.ones(scene.fields.shape, bool)
    model, dark = _digital_numbers(scene, 400.0)
    labels = model.delineate(dark, valid).labels
    for field in range(1, int(scene.fields.max()) + 1):
        assert _best_iou(scene.fields == field, labels)[1] >= 0.85, f"field {field}"
    assert (labels[scene.pond] > 0).mean() < 0.02
    model, bright = _digital_numbers(scene, 700.0)
    assert (model.delineate(bright, valid).labels == labels).mean() > 0.99


def test_fine_pixels_give_the_fields_of_their_10_m_blocks(scene: Farmland) -> None:
    """The method follows metres: the scene at 5 m (each 10 m pixel as 2 x 2) is delineated on 10 m blocks and
    gives the fields of the 10 m scene."""
    valid = np.ones(scene.fields.shape, bool)
    coarse = _model().delineate(scene.pixels, valid).labels
    fine_model = FieldDelineator(FieldDelineatorSpec(type="field_delineator"), pixel_size_m=5.0)
    assert fine_model.block == 2
    fine = np.repeat(np.repeat(scene.pixels, 2, 1), 2, 2)
    labels = fine_model.delineate(fine, np.ones(fine.shape[1:], bool)).labels
    assert labels.shape == fine.shape[1:]
    assert (labels[::2, ::2] == coarse).mean() > 0.99


def test_working_blocks_and_block_means() -> None:
    assert [working_block(10, p) for p in (0.5, 2, 3, 5, 10, 30)] == [20, 5, 3, 2, 1, 1]
    assert working_block(0, 0.5) == 1
    pixels = np.arange(2 * 5 * 5, dtype=np.float32).reshape(2, 5, 5)
    valid = np.ones((5, 5), bool)
    valid[0, 0] = False
    means, ok = block_mean(pixels, valid, 2)
    assert means.shape == (2, 3, 3) and ok.shape == (3, 3)
    assert means[0, 0, 0] == pytest.approx((1 + 5 + 6) / 3)  # the invalid pixel is left out
    assert ok[0, 0] and not ok[2, 2]  # a padded corner block holds one valid pixel of four


def test_a_ring_beyond_the_calm_core_is_cut_a_patch_inside_stays() -> None:
    """A strip beyond a field's calm core that touches non-field land (a wet-grass ring by a pond) is dropped; a
    rough patch enclosed by the field stays."""
    labels = np.zeros((40, 40), np.int32)
    labels[2:38, 2:38] = 1
    labels[30:, 30:] = 0  # a pond in the corner
    pond = np.zeros(labels.shape, bool)
    pond[30:, 30:] = True
    seeds = ((labels == 1) & (ndimage.distance_transform_edt(~pond) > 6)).astype(np.int32)  # no calm by the pond
    seeds[8:16, 8:16] = 0  # a rough patch inside the field
    out = _drop_outer_strips(labels, seeds, grow_max_px=2.0)
    assert (out[8:16, 8:16] == 1).all()
    assert (out[27:30, 31:38] == 0).all() and (out[31:38, 27:30] == 0).all(), "the strip along the pond stays"
    assert (out[2:22, 2:22] == 1).all()


def test_the_bands_decide_swir_and_validate_checks_model_bands(tmp_path: Path) -> None:
    def job(bands: list[str], **model: object) -> dict:
        return {
            "inputs": {"files": ["a.tif"], "band_names": bands},
            "models": [{"type": "field_delineator", **model}],
            "output": {"path": str(tmp_path / "o.gpkg")},
        }

    bands = (["red", "green", "blue", "nir"], ["green", "red", "nir", "swir16"])
    naip, s2 = (parse_spec(job(b)).models[0] for b in bands)
    assert isinstance(naip, FieldDelineatorSpec) and isinstance(s2, FieldDelineatorSpec)
    assert naip.bands == ("green", "red", "nir")
    assert s2.bands == ("green", "red", "nir", "swir16")
    with pytest.raises(SpecError, match="leave use_swir out"):
        parse_spec(job(["red", "green", "blue", "nir"], use_swir=True))
    spec = parse_spec({**job(["red", "green", "nir"]), "models": [{"type": "crop_health", "indices": ["ndre"]}]})
    with pytest.raises(SpecError, match="reads band"):
        model_infos(spec)
