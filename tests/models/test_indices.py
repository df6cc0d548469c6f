"""Tests of geoseg.models.crop_health.indices and geoseg.models.crop_health.model: formulas, classes, smoothing."""

from __future__ import annotations

import math
import typing

import numpy as np
import pytest
import torch
from affine import Affine

from geoseg.inputs.tiles import TileGrid
from geoseg.models.base import SceneInfo, SemanticOutput, TileContext
from geoseg.models.crop_health.catalog import index_array
from geoseg.models.crop_health.indices import INDICES, bands_for, compute_indices
from geoseg.models.crop_health.model import CropHealthModel, HealthClassifier, class_bounds, majority_filter
from geoseg.spec.job import CropHealthSpec, VegetationIndex

NAN = float("nan")
# one pixel of a healthy canopy, as reflectance
BLUE, GREEN, RED, REDEDGE, NIR, SWIR16 = 0.05, 0.08, 0.1, 0.2, 0.5, 0.3


def _index(name: str, **bands: float | list[float]) -> np.ndarray:
    """One index over a (1, C, 1, W) stack built from per-band values."""
    names = tuple(bands)
    values = [np.atleast_1d(np.asarray(v, np.float32)) for v in bands.values()]
    stack = torch.from_numpy(np.stack(values)[None, :, None, :])
    return compute_indices(stack, names, [name])[name][0, 0].numpy()


# --------------------------------------------------------------------------------------------- formulas
@pytest.mark.parametrize(
    ("name", "bands", "expected"),
    [
        ("ndvi", {"red": RED, "nir": NIR}, 0.4 / 0.6),  # (0.5 - 0.1) / (0.5 + 0.1) = 0.6667
        ("ndre", {"rededge": REDEDGE, "nir": NIR}, 0.3 / 0.7),  # (0.5 - 0.2) / (0.5 + 0.2) = 0.4286
        ("gndvi", {"green": GREEN, "nir": NIR}, 0.42 / 0.58),  # (0.5 - 0.08) / (0.5 + 0.08) = 0.7241
        ("ndmi", {"nir": NIR, "swir16": SWIR16}, 0.25),  # (0.5 - 0.3) / (0.5 + 0.3)
        # 2.5 (0.5 - 0.1) / (0.5 + 6 * 0.1 - 7.5 * 0.05 + 1) = 1.0 / 1.725 = 0.5797
        ("evi", {"blue": BLUE, "red": RED, "nir": NIR}, 1.0 / 1.725),
        ("savi", {"red": RED, "nir": NIR}, 0.6 / 1.1),  # 1.5 (0.5 - 0.1) / (0.5 + 0.1 + 0.5) = 0.5455
    ],
)
def test_index_by_hand(name, bands, expected):
    assert _index(name, **bands)[0] == pytest.approx(expected, rel=1e-6)


def test_ndvi_of_water_and_bare_soil():
    # water: red 0.3 > nir 0.1 -> (0.1 - 0.3) / 0.4 = -0.5; bare soil: red 0.2, nir 0.3 -> 0.2; equal -> 0
    np.testing.assert_allclose(_index("ndvi", red=[0.3, 0.2, 0.4], nir=[0.1, 0.3, 0.4]), [-0.5, 0.2, 0.0], rtol=1e-6)


@pytest.mark.parametrize(
    ("name", "bands"),
    [
        ("ndvi", {"red": [0.0, 0.2], "nir": [0.0, -0.2]}),
        ("ndre", {"rededge": 0.0, "nir": 0.0}),
        ("gndvi", {"green": 0.0, "nir": 0.0}),
        ("ndmi", {"nir": 0.0, "swir16": 0.0}),
        ("evi", {"blue": 0.2, "red": 0.0, "nir": 0.5}),  # 0.5 + 0 - 1.5 + 1 = 0
        ("savi", {"red": -0.25, "nir": -0.25}),  # -0.25 - 0.25 + 0.5 = 0
    ],
)
def test_zero_denominator_gives_nan(name, bands):
    assert np.isnan(_index(name, **bands)).all()


def test_nan_only_where_the_denominator_is_zero():
    np.testing.assert_allclose(_index("ndvi", red=[0.0, 0.1], nir=[0.0, 0.5]), [NAN, 0.4 / 0.6], rtol=1e-6)


def test_integer_and_half_stacks_become_float32():
    stack = torch.tensor([[[[100]], [[500]]]], dtype=torch.int16)
    out = compute_indices(stack, ("red", "nir"), ["ndvi", "savi"])
    assert out["ndvi"].dtype == torch.float32 and out["ndvi"].item() == pytest.approx(400 / 600)
    half = compute_indices(stack.half() / 1000, ("red", "nir"), ["ndvi"])["ndvi"]
    assert half.dtype == torch.float32 and half.item() == pytest.approx(0.4 / 0.6, rel=1e-3)


def test_channel_order_follows_band_names():
    stack = torch.tensor([[[[NIR]], [[SWIR16]], [[RED]]]])
    out = compute_indices(stack, ("nir", "swir16", "red"), ["ndvi", "ndmi"])
    assert out["ndvi"].item() == pytest.approx(0.4 / 0.6) and out["ndmi"].item() == pytest.approx(0.25)
    assert out["ndvi"].shape == (1, 1, 1)


def test_bands_for():
    assert bands_for(["ndvi"]) == ("red", "nir")
    assert bands_for(["ndvi", "evi"]) == ("red", "nir", "blue")
    assert bands_for(["evi", "ndvi"]) == ("blue", "red", "nir")
    assert bands_for(("ndmi", "ndre", "ndmi")) == ("nir", "swir16", "rededge")
    assert bands_for([]) == ()
    with pytest.raises(KeyError):
        bands_for(["ndwi"])


def test_every_spec_index_has_a_formula():
    assert set(typing.get_args(VegetationIndex)) == set(INDICES)


# --------------------------------------------------------------------------------------------- health classes
THRESHOLDS = (0.25, 0.45, 0.65)


def _classify(values: list[float], valid: list[bool] | None = None) -> list[int]:
    index = torch.tensor([values], dtype=torch.float32)
    mask = torch.tensor([valid if valid is not None else [True] * len(values)])
    classes = HealthClassifier(THRESHOLDS)(index, mask)
    assert classes.dtype == torch.uint8
    return classes[0].tolist()


def test_classes_between_thresholds():
    assert _classify([-1.0, 0.0, 0.3, 0.5, 0.9, 1.0]) == [1, 1, 2, 3, 4, 4]


def test_a_value_on_a_threshold_goes_to_the_upper_class():
    """``bucketize(right=True)``: thresholds are exclusive upper bounds, so 0.25 is already 'stressed'."""
    below = [float(np.nextafter(np.float32(t), np.float32(-math.inf))) for t in THRESHOLDS]  # float32 neighbours
    assert _classify([below[0], 0.25, below[1], 0.45, below[2], 0.65]) == [1, 2, 2, 3, 3, 4]


def test_invalid_and_nan_are_class_zero():
    assert _classify([0.9, 0.9, NAN, 0.1], [True, False, True, False]) == [4, 0, 0, 0]


def test_majority_filter_removes_an_isolated_pixel():
    classes = torch.full((1, 5, 5), 3, dtype=torch.uint8)
    classes[0, 2, 2] = 1
    classes[0, 0, 0] = 0
    out = majority_filter(classes, 1, 4)
    expected = torch.full((1, 5, 5), 3, dtype=torch.uint8)
    expected[0, 0, 0] = 0  # nodata stays nodata, and does not spread to its neighbours
    assert torch.equal(out, expected) and out.dtype == torch.uint8


def test_majority_filter_keeps_regions_and_ignores_nodata_votes():
    classes = torch.tensor(
        [
            [
                [0, 0, 0, 2, 2, 2],
                [0, 4, 0, 2, 2, 2],
                [0, 0, 0, 2, 2, 2],
                [1, 1, 1, 4, 4, 4],
                [1, 1, 1, 4, 4, 4],
            ]
        ],
        dtype=torch.uint8,
    )
    # the lone 4 among nodata keeps its class (0 is no candidate); the block edges stay put
    assert torch.equal(majority_filter(classes, 1, 4), classes)


def test_majority_filter_ties_go_to_the_lower_class_and_radius_zero_is_identity():
    classes = torch.tensor([[[1, 2]], [[4, 3]]], dtype=torch.uint8)  # a batch of two 1 x 2 tiles
    assert majority_filter(classes, 1, 4).tolist() == [[[1, 1]], [[3, 3]]]
    assert majority_filter(classes, 0, 4) is classes


def test_majority_filter_radius_two():
    classes = torch.full((1, 7, 7), 2, dtype=torch.uint8)
    classes[0, 2:4, 2:4] = 4  # a 2 x 2 speck: 4 of 25 votes at most
    assert (majority_filter(classes, 2, 4) == 2).all()
    assert torch.equal(majority_filter(classes, 1, 4)[0, 2:4, 2:4], torch.full((2, 2), 2, dtype=torch.uint8))


# --------------------------------------------------------------------------------------------- the model
SCENE = SceneInfo(("red", "nir"), "", (10.0, 10.0), 100.0)


def test_numpy_indices_match_the_torch_ones():
    rng = np.random.default_rng(3)
    names = ("blue", "green", "red", "rededge", "nir", "swir16")
    stack = rng.uniform(0, 0.6, (1, len(names), 5, 7)).astype(np.float32)
    stack[0, :, 0, 0] = 0  # 0/0: NaN in both
    torch_values = compute_indices(torch.from_numpy(stack), names, list(INDICES))
    bands = {name: stack[0, i] for i, name in enumerate(names)}
    for name, values in torch_values.items():
        np.testing.assert_allclose(index_array(name, bands), values[0].numpy(), rtol=1e-5, err_msg=name)


def test_scene_relative_class_bounds():
    table = np.linspace(-0.2, 0.8, 101)  # percentile q -> -0.2 + q / 100
    scene = SceneInfo(("red", "nir"), "", (10.0, 10.0), 100.0, index_percentiles={"ndvi": table})
    spec = CropHealthSpec(type="crop_health", classes_by="percentiles", percentiles={"non_vegetation": 10,
                          "stressed": 25, "moderate": 50})  # fmt: skip
    np.testing.assert_allclose(class_bounds(spec, scene), (-0.1, 0.05, 0.3), atol=1e-9)
    assert class_bounds(CropHealthSpec(type="crop_health"), scene) == (0.25, 0.45, 0.65)


def test_crop_health_model_predict():
    spec = CropHealthSpec(type="crop_health", indices=["ndre"], classify_by="ndvi", smoothing_px=0)
    model = CropHealthModel(spec, SCENE)
    assert model.bands == ("red", "nir", "rededge") and model.indices == ["ndvi", "ndre"]
    # 1 x 4 pixels: ndvi 0.6667 (healthy), 0.5 (moderate), 0/0 (NaN), and an invalid pixel
    pixels = np.array([[[[0.1, 0.2, 0.0, 0.1]], [[0.5, 0.6, 0.0, 0.5]], [[0.2, 0.1, 0.0, 0.2]]]], np.float32)
    valid = np.array([[[True, True, True, False]]])
    tile = TileGrid(4, 1, 4, 0)[0, 0]
    (out,) = model.predict(pixels, valid, [TileContext(tile, Affine.identity())])
    assert isinstance(out, SemanticOutput)
    assert out.classes.dtype == np.uint8 and out.classes.tolist() == [[4, 3, 0, 0]]
    np.testing.assert_allclose(out.layers["ndvi"], [[0.4 / 0.6, 0.5, NAN, NAN]], rtol=1e-6)
    np.testing.assert_allclose(out.layers["ndre"], [[0.3 / 0.7, 0.5 / 0.7, NAN, NAN]], rtol=1e-6)
    assert out.layers["ndre"].dtype == np.float32


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_majority_filter_equals_a_window_by_window_count(radius):
    """Random classes (0 = nodata): every pixel gets the most frequent class of its window, counted directly."""
    rng = np.random.default_rng(radius)
    classes = rng.integers(0, 5, size=(2, 23, 17)).astype(np.uint8)
    padded = np.pad(classes, ((0, 0), (radius, radius), (radius, radius)))
    expected = classes.copy()
    for n, r, c in zip(*np.nonzero(classes), strict=True):
        window = padded[n, r : r + 2 * radius + 1, c : c + 2 * radius + 1]
        counts = np.bincount(window.ravel(), minlength=5)[1:]
        expected[n, r, c] = counts.argmax() + 1
    got = majority_filter(torch.from_numpy(classes), radius, 4).numpy()
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("smoothing", [0, 1, 2])
def test_cpu_model_equals_the_torch_model(smoothing):
    """The numpy model CPU workers build gives the torch (GPU) model's classes and index layers, bit for bit."""
    from geoseg.models.crop_health.cpu import CropHealthCpuModel, build_crop_health

    spec = CropHealthSpec(type="crop_health", indices=["ndvi", "ndre", "evi"], smoothing_px=smoothing)
    rng = np.random.default_rng(smoothing)
    names = bands_for(spec.all_indices)
    pixels = rng.uniform(0, 0.6, size=(2, len(names), 40, 30)).astype(np.float32)
    pixels[:, :, :3] = 0.0  # zero denominators: NaN indices
    valid = rng.random((2, 40, 30)) > 0.1
    scene = SceneInfo(names, "", (10.0, 10.0), 100.0)
    contexts = [TileContext(TileGrid(30, 40, 30, 0)[0, 0], Affine.identity(), None)] * 2
    cpu = build_crop_health(spec, scene, "cpu")
    assert isinstance(cpu, CropHealthCpuModel)
    got = cpu.predict(pixels, valid, contexts)
    expected = CropHealthModel(spec, scene, "cpu").predict(pixels, valid, contexts)
    for a, b in zip(got, expected, strict=True):
        assert isinstance(a, SemanticOutput) and isinstance(b, SemanticOutput)
        np.testing.assert_array_equal(a.classes, b.classes)
        assert a.layers.keys() == b.layers.keys()
        for name in a.layers:
            assert a.layers[name].dtype == np.float32
            np.testing.assert_array_equal(a.layers[name], b.layers[name])
