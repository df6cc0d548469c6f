"""Line strength and calm seeds of the field delineator (geoseg.models.fields.edges)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from geoseg.models.fields.edges import (
    NECK_CAP_PX,
    LineFilter,
    calm_seeds,
    edge_length_px,
    kernel_radius,
    line_kernels,
    line_strength,
    log_bands,
)

WIDTH, LENGTH = 0.7, 2.0
SHORT = LineFilter(WIDTH, LENGTH)
LONG = LineFilter(WIDTH, LENGTH, long_length_px=8.0, long_gain=1.3)


def _field_pair(lane_contrast: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two fields of one bare soil (4 bands, noise 0.004) split by a 1 px track along column 40."""
    rng = np.random.default_rng(seed)
    soil = np.array([0.11, 0.13, 0.20, 0.28], np.float32)[:, None, None]
    pixels = soil + rng.normal(0, 0.004, (4, 80, 80)).astype(np.float32)
    pixels[1, :, 40] += lane_contrast  # redder and darker in NIR, like a track
    pixels[2, :, 40] -= lane_contrast
    return pixels, np.ones((80, 80), bool)


def test_kernels_have_zero_mean_and_answer_one_on_a_line_of_unit_contrast() -> None:
    kernels = line_kernels(WIDTH, LENGTH)
    assert kernels.shape == (16, 2 * kernel_radius(WIDTH, LENGTH) + 1, 2 * kernel_radius(WIDTH, LENGTH) + 1)
    assert np.abs(kernels.sum(axis=(1, 2))).max() < 1e-5
    line = np.zeros(kernels.shape[1:], np.float32)
    line[kernels.shape[1] // 2, :] = 1.0  # a horizontal bright line through the centre
    answers = (kernels * line).sum(axis=(1, 2))
    assert 0.8 < answers.max() < 1.2 and answers.argmax() == 0


def test_fourier_filter_equals_a_direct_convolution() -> None:
    rng = np.random.default_rng(1)
    pixels = rng.uniform(0.02, 0.4, (3, 50, 61)).astype(np.float32)
    valid = np.ones((50, 61), bool)
    bands = log_bands(pixels, valid)
    direct = np.zeros((50, 61), np.float32)
    for kernel in line_kernels(WIDTH, LENGTH):
        answers = np.stack([ndimage.correlate(band, kernel, mode="mirror") for band in bands])
        direct = np.maximum(direct, np.sqrt((answers**2).sum(axis=0)))
    np.testing.assert_allclose(line_strength(pixels, valid, SHORT), direct, atol=1e-4)
    for kernel in line_kernels(WIDTH, LONG.long_length_px):
        answers = np.stack([ndimage.correlate(band, kernel, mode="mirror") for band in bands])
        direct = np.maximum(direct, LONG.long_gain * np.sqrt((answers**2).sum(axis=0)))
    np.testing.assert_allclose(line_strength(pixels, valid, LONG), direct, atol=1e-4)


def test_a_faint_track_stands_out_more_than_in_a_gradient() -> None:
    """A track of contrast 0.015 (about four times the noise): its weakest point along its whole length is
    stronger than anything inside the fields, so one threshold splits them, with a wider margin than a smoothed
    gradient's (the delineator's edge map before the line filter), where the two are about even."""
    fields = np.ones((80, 80), bool)
    fields[:, 37:44] = False
    core = (slice(8, -8), slice(8, -8))
    for seed in range(3):
        pixels, valid = _field_pair(0.015, seed)
        strength = line_strength(pixels, valid, SHORT)
        line_margin = strength[8:-8, 40].min() / strength[core][fields[core]].max()
        smooth = [ndimage.gaussian_filter(band, 1.0) for band in pixels]
        gradient = np.sqrt(sum(ndimage.sobel(b, 0) ** 2 + ndimage.sobel(b, 1) ** 2 for b in smooth))
        gradient_margin = gradient[8:-8, 38:43].max(axis=1).min() / gradient[core][fields[core]].max()
        assert line_margin > 1.2 and line_margin > gradient_margin + 0.25, (line_margin, gradient_margin)


def test_the_long_filter_lifts_a_track_too_faint_for_the_short_one() -> None:
    """A track of contrast 0.01 (2.5 times the noise) along the whole scene, in three noise draws: the short
    filter's weakest answer on it falls below the strongest inside the fields in one of them; with the long filter
    beside it, it is well above in all three."""
    fields = np.ones((80, 80), bool)
    fields[:, 37:44] = False
    core = (slice(8, -8), slice(8, -8))
    margins = []
    for seed in range(3):
        pixels, valid = _field_pair(0.01, seed)
        strengths = [line_strength(pixels, valid, line) for line in (SHORT, LONG)]
        margins.append([s[24:-24, 40].min() / s[core][fields[core]].max() for s in strengths])
    short, long = np.array(margins).T
    assert short.min() < 1.0 and long.min() > 1.2 and (long - short).min() > 0.4, margins


def test_the_long_filter_leaves_a_short_dash_as_the_short_filter_sees_it() -> None:
    """A 5 px dash (a bush, a patch) is not a boundary: its strongest answer stays the short filter's."""
    pixels, valid = _field_pair(0.0)
    pixels[1, 38:43, 20] += 0.05
    pixels[2, 38:43, 20] -= 0.05
    short, both = line_strength(pixels, valid, SHORT), line_strength(pixels, valid, LONG)
    assert short[36:45, 18:23].max() > 0.15
    np.testing.assert_allclose(both[36:45, 18:23].max(), short[36:45, 18:23].max(), rtol=0.02)


def test_a_uniform_field_and_its_masked_holes_draw_no_lines() -> None:
    pixels, valid = _field_pair(0.0)
    valid[30:40, 10:20] = False  # a cloud: read as 0
    pixels[:, ~valid] = 0
    strength = line_strength(pixels, valid, SHORT)
    assert strength[valid].max() < 0.1


def test_a_window_sees_the_same_strength_as_the_scene_away_from_its_edge() -> None:
    pixels, valid = _field_pair(0.02)
    for line in (SHORT, LONG):
        whole = line_strength(pixels, valid, line)
        window = line_strength(pixels[:, 4:76, 2:78], valid[4:76, 2:78], line)
        inner = (slice(line.radius, -line.radius), slice(line.radius, -line.radius))
        np.testing.assert_allclose(window[inner], whole[4:76, 2:78][inner], atol=1e-5)


def test_calm_areas_joined_by_a_neck_seed_apart() -> None:
    calm = np.zeros((40, 90), bool)
    calm[5:35, 5:40] = calm[5:35, 50:85] = True
    calm[18:22, 40:50] = True  # a 4 px gap in the lane between them
    seeds = calm_seeds(calm, erode_px=0, neck_depth_px=2.0, min_px=10, strength=np.zeros(calm.shape))
    assert seeds[20, 20] != seeds[20, 70] and min(seeds[20, 20], seeds[20, 70]) > 0
    assert seeds[20, 20] == seeds[10, 10] and seeds[20, 70] == seeds[30, 80]
    assert calm_seeds(calm, erode_px=0, neck_depth_px=0, min_px=10, strength=np.zeros(calm.shape))[20, 70] == 1


def test_one_irregular_area_is_one_seed_and_small_ones_are_dropped() -> None:
    calm = np.zeros((60, 60), bool)
    calm[5:55, 5:25] = True
    calm[40:55, 25:55] = True  # an L: its arm is as wide as the neck where it joins, no top of its own
    calm[2:4, 50:53] = True  # 6 px: too small
    seeds = calm_seeds(calm, erode_px=0, neck_depth_px=2.0, min_px=10, strength=np.zeros(calm.shape))
    assert set(np.unique(seeds)) == {0, int(seeds[20, 15])}
    assert seeds[47, 50] == seeds[20, 15]


def test_a_window_splits_calm_areas_as_the_scene_does() -> None:
    """Depth is capped at NECK_CAP_PX, so a window cut through a wide area seeds it as the whole scene does: the
    same partition wherever the window's own edge is farther than the cap."""
    calm = np.zeros((100, 200), bool)
    calm[5:95, 5:95] = calm[5:95, 105:195] = True
    calm[47:53, 95:105] = True  # a 6 px gap
    flat = np.zeros(calm.shape)  # no line strength
    whole = calm_seeds(calm, erode_px=0, neck_depth_px=2.0, min_px=10, strength=flat)
    window = calm_seeds(calm[:, 40:160], erode_px=0, neck_depth_px=2.0, min_px=10, strength=flat[:, 40:160])
    inner = (slice(None), slice(NECK_CAP_PX + 2, 120 - NECK_CAP_PX - 2))
    pairs = set(zip(whole[:, 40:160][inner].ravel(), window[inner].ravel(), strict=True))
    assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs}) == 3  # 0 and two seeds, 1:1


def test_edge_length_follows_the_pixel_size_within_bounds() -> None:
    assert edge_length_px(20, 0.7, 10) == 2.0
    assert edge_length_px(20, 0.7, 30) == 0.7  # round at 30 m: lanes are not resolved
    assert edge_length_px(20, 0.7, 1) == 2.0  # at most 2 px, whatever the pixel size
