"""A region holding a bare and a green field, joined where no lane parts them, is split; one field is not."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.models.fields.delineator import FieldDelineator
from geoseg.models.fields.split import SplitRule, split_mixed_cover
from geoseg.spec.job import FieldDelineatorSpec

RULE = SplitRule(step=0.2, bimodality=0.7, ramp_px=8, min_px=20)


def _ramp(shape: tuple[int, int], low: float, high: float, start: int, width: int) -> np.ndarray:
    """NDVI ``low`` left of column ``start``, ``high`` from ``start + width`` on, a linear ramp between."""
    columns = np.clip((np.arange(shape[1]) - start) / max(width, 1), 0, 1)
    return np.broadcast_to(low + (high - low) * columns, shape).astype(np.float32)


def _one_region(shape: tuple[int, int]) -> np.ndarray:
    labels = np.zeros(shape, np.int32)
    labels[2:-2, 2:-2] = 1
    return labels


def test_a_bare_and_a_green_field_meeting_in_a_short_ramp_are_split_in_the_ramp() -> None:
    shape = (40, 80)
    ndvi = _ramp(shape, 0.25, 0.6, start=30, width=4)
    pieces = split_mixed_cover(_one_region(shape), ndvi, RULE)
    assert set(np.unique(pieces)) == {0, 1, 2}
    row = pieces[20, 2:-2]
    cut = int(np.flatnonzero(row != row[0])[0]) + 2
    assert 30 <= cut <= 34, f"cut at column {cut}, the ramp is 30-34"
    assert (pieces[2:-2, 2:29] == row[0]).all() and (pieces[2:-2, 36:-2] == row[-1]).all()


@pytest.mark.parametrize(
    "case",
    [
        "an even NDVI gradient across the field",  # one crop, growing unevenly from one side: no two blocks
        "a small bare patch",  # a wet or bare spot smaller than a seed: not a field of its own
        "a step smaller than split_ndvi_step",
    ],
)
def test_one_field_stays_one(case: str) -> None:
    shape = (40, 80)
    if case.startswith("an even"):
        ndvi = _ramp(shape, 0.25, 0.65, start=2, width=76)
    elif case.startswith("a small"):
        ndvi = np.full(shape, 0.6, np.float32)
        ndvi[15:19, 20:24] = 0.2
    else:
        ndvi = _ramp(shape, 0.45, 0.6, start=30, width=2)
    labels = _one_region(shape)
    assert (split_mixed_cover(labels, ndvi, RULE) == labels).all()


def _bare_beside_green(ramp_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Bare soil (left) and a green crop (right), joined by a colour ramp, no lane; woods all round.
    Returns the bands (green, red, NIR, SWIR) and the bare field's mask."""
    shape = (70, 130)
    bare, green = np.array([0.10, 0.13, 0.22, 0.27]), np.array([0.07, 0.05, 0.34, 0.20])
    share = np.clip((np.arange(shape[1]) - 60) / ramp_px, 0, 1)[None, :, None]
    pixels = (bare * (1 - share) + green * share).repeat(shape[0], axis=0).transpose(2, 0, 1).astype(np.float32)
    rng = np.random.default_rng(0)
    pixels *= rng.normal(1, 0.01, pixels.shape).astype(np.float32)
    inside = np.zeros(shape, bool)
    inside[8:-8, 8:-8] = True
    pixels[:, ~inside] = np.array([0.05, 0.04, 0.18, 0.10], np.float32)[:, None]  # wood
    field = inside.copy()
    field[:, 60:] = False
    return pixels, field


@pytest.mark.parametrize(("ramp_px", "long_filter"), [(5, True), (7, True), (7, False)])
def test_the_delineator_splits_a_bare_and_a_green_field_that_no_lane_parts(ramp_px: int, long_filter: bool) -> None:
    """A 7 px ramp passes the short line filter (one region without the rule and the long filter); a 5 px ramp does
    not, and the rule then cuts no sliver off the ramp's side: two fields either way. The long filter finds the
    straight 7 px ramp by itself; without it the rule's cut lies in the ramp."""
    pixels, bare = _bare_beside_green(ramp_px)
    valid = np.ones(bare.shape, bool)
    off = {} if long_filter else {"long_edge_length_m": 0}
    if not long_filter:
        no_split = FieldDelineatorSpec(type="field_delineator", split_ndvi_step=0, **off)
        fused = FieldDelineator(no_split).delineate(pixels, valid).labels
        assert fused[35, 20] > 0 and fused[35, 20] == fused[35, 110], (
            "without the split rule the two fields should come out as one: the scene no longer tests the rule"
        )
    labels = FieldDelineator(FieldDelineatorSpec(type="field_delineator", **off)).delineate(pixels, valid).labels
    left, right = labels[35, 20], labels[35, 110]
    assert set(np.unique(labels)) == {0, left, right} and left > 0 and right > 0 and left != right
    if not long_filter:  # the rule's cut: in the ramp (the 5 px ramp's is the line filter's, a few px past it)
        assert ((labels == left) & bare).sum() / (labels == left).sum() > 0.9
