"""Where one field ends and the next begins: line strength and calm seeds for the field delineator.

At 10-30 m a boundary between two fields is a change of colour (a step) or a lane, ditch or hedge one or two
pixels wide. Pixel by pixel a lane between two fields of one crop is often no stronger than the noise inside them,
but it runs straight for many pixels, and that is what the eye follows. So the strength used here is the answer of
an elongated line filter: the second derivative of a Gaussian across (sigma ``width_px``) times a Gaussian along
(sigma ``length_px``), at 16 orientations, on ``log(reflectance + 0.03)`` of every band (a lane then reads alike
on a bright bare field and a dark green one, and the noise of dark bands is not blown up), the bands' answers
combined as the root of their summed squares, and the largest over orientations kept. It answers on lanes (bright
or dark) and on both sides of a step. The filter is a circular convolution in the Fourier domain of the window,
padded by reflection, so nothing wraps into the result.

A boundary that is faint all along (a change of crop without a lane, a lane the width of a pixel) can stay below
the threshold at 2 px along; but it runs straight for a field's length. A second filter, as narrow and
``long_length_px`` long, answers it alike while it averages noise and curved streaks over more pixels, so its
answer counts ``long_gain`` times where that is the larger (:class:`LineFilter`).

Seeds are the calm pixels, cut where a calm area narrows to a neck (a gap in a lane or hedge joins two fields
only through a neck): the tops of the distance-to-edge map that stand ``neck_depth_px`` above the neck between
them each seed a region. The distance map is capped at :data:`NECK_CAP_PX` so that it is the same in every read
window that holds a pixel with that margin, whatever the tile size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import fft, ndimage
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from geoseg.spec.models import MAX_EDGE_LENGTH_PX

LOG_OFFSET = 0.03
"""Added to reflectance before the logarithm."""
ORIENTATIONS = 16
NECK_CAP_PX = 16
"""Distances to the nearest edge beyond this many pixels count as this many (a neck is narrower)."""
FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)
TIE_BREAK = 1e-3
"""Weight of the line strength (below ``edge_threshold`` on calm pixels) beside the distance map, whose values
differ by 0.03 px or more up to :data:`NECK_CAP_PX`: it orders pixels of one depth and never two depths."""


@dataclass(frozen=True)
class LineFilter:
    """The line filter's shape in pixels: sigma across and along, and a second filter as narrow, sigma
    ``long_length_px`` along (0: none), whose answer times ``long_gain`` counts where it is the larger."""

    width_px: float
    length_px: float
    long_length_px: float = 0.0
    long_gain: float = 1.0

    @property
    def radius(self) -> int:
        """Half the size of its largest kernel."""
        return kernel_radius(self.width_px, max(self.length_px, self.long_length_px))


def kernel_radius(width_px: float, length_px: float) -> int:
    """Half the size of the line filter's kernels (three sigmas of the longer axis)."""
    return math.ceil(3 * max(width_px, length_px))


def edge_length_px(length_m: float, width_px: float, pixel_size_m: float, cap_px: float = MAX_EDGE_LENGTH_PX) -> float:
    """A filter's sigma along a lane in pixels: ``length_m`` at this pixel size, at least ``width_px`` (round),
    at most ``cap_px``."""
    return max(width_px, min(length_m / pixel_size_m, cap_px))


@lru_cache(maxsize=8)
def line_kernels(width_px: float, length_px: float) -> np.ndarray:
    """The filter's kernels, (ORIENTATIONS, S, S) float32: zero mean, positive on a bright line; an ideal line
    of contrast c (in log reflectance) along the kernel answers about c."""
    half = kernel_radius(width_px, length_px)
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    kernels = []
    for i in range(ORIENTATIONS):
        angle = math.pi * i / ORIENTATIONS
        along = xx * math.cos(angle) + yy * math.sin(angle)
        across = -xx * math.sin(angle) + yy * math.cos(angle)
        gauss = np.exp(-(along**2) / (2 * length_px**2) - across**2 / (2 * width_px**2))
        kernel = (1 - across**2 / width_px**2) * gauss
        kernel -= kernel.mean()
        kernels.append(kernel / (np.abs(kernel).sum() / 2))
    return np.stack(kernels).astype(np.float32)


@lru_cache(maxsize=8)
def _kernel_spectra(shape: tuple[int, int], line: LineFilter) -> np.ndarray:
    """The kernels' real FFTs over a window of ``shape``, centred on the origin (circular convolution): the
    line filter's, then the long filter's times its gain."""
    half = line.radius
    kernels = [_padded(line_kernels(line.width_px, line.length_px), half)]
    if line.long_length_px > 0:
        kernels.append(line.long_gain * _padded(line_kernels(line.width_px, line.long_length_px), half))
    stacked = np.concatenate(kernels)
    placed = np.zeros((len(stacked), *shape), np.float32)
    placed[:, : stacked.shape[1], : stacked.shape[2]] = stacked
    placed = np.roll(placed, (-half, -half), axis=(1, 2))
    return fft.rfft2(placed, axes=(1, 2))


def _padded(kernels: np.ndarray, half: int) -> np.ndarray:
    """Kernels (K, S, S) zero-padded to (K, 2 * half + 1, 2 * half + 1)."""
    grow = half - kernels.shape[-1] // 2
    return np.pad(kernels, ((0, 0), (grow, grow), (grow, grow)))


def masked_smooth(band: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing that ignores invalid pixels (normalized convolution); 0 far from any valid pixel."""
    if sigma <= 0:
        return band
    weight = ndimage.gaussian_filter(valid.astype(np.float32), sigma)
    total = ndimage.gaussian_filter(np.where(valid, band, 0).astype(np.float32), sigma)
    return np.where(weight > 1e-3, total / np.maximum(weight, 1e-3), 0).astype(np.float32)


def log_bands(pixels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``log(reflectance + LOG_OFFSET)`` of (C, H, W) bands; invalid pixels take a smoothed fill of their valid
    neighbours, so that clouds and nodata do not draw lines of their own."""
    out = np.empty(pixels.shape, np.float32)
    for i, band in enumerate(pixels):
        filled = np.where(valid, band, masked_smooth(band, valid, 2.0))
        out[i] = np.log(np.maximum(filled, 0) + LOG_OFFSET)
    return out


def line_strength(pixels: np.ndarray, valid: np.ndarray, line: LineFilter) -> np.ndarray:
    """Line and edge strength (H, W) float32 of (C, H, W) reflectance bands, in log-reflectance contrast."""
    bands = log_bands(pixels, valid)
    _, rows, cols = bands.shape
    pad = line.radius
    shape = (fft.next_fast_len(rows + 2 * pad, real=True), fft.next_fast_len(cols + 2 * pad, real=True))
    padded = np.pad(bands, ((0, 0), (pad, shape[0] - rows - pad), (pad, shape[1] - cols - pad)), mode="reflect")
    spectra = fft.rfft2(padded, axes=(1, 2))
    best = np.zeros((rows, cols), np.float32)
    for kernel in _kernel_spectra(shape, line):
        answers = fft.irfft2(spectra * kernel, s=shape, axes=(1, 2))[:, pad : pad + rows, pad : pad + cols]
        np.maximum(best, np.sqrt(np.einsum("chw,chw->hw", answers, answers)), out=best)
    return best


def calm_seeds(calm: np.ndarray, erode_px: int, neck_depth_px: float, min_px: int, strength: np.ndarray) -> np.ndarray:
    """Seed regions (int32, 0 = none) of a calm mask: eroded by ``erode_px`` (cuts leaks through 1-2 px gaps),
    split at necks at least ``neck_depth_px`` shallower than the areas they join (0: no split), and at least
    ``min_px`` pixels each.

    The split is a watershed of the distance map from its tops. The map has plateaus (its values are square roots
    of whole numbers), and a watershed settles a plateau by the order in which it floods, which depends on the
    whole read window; ``strength`` (the line strength, continuous and local), scaled by :data:`TIE_BREAK` far
    below the map's steps, orders the plateau's pixels instead, so that every window cuts a calm area alike."""
    if erode_px:
        calm = ndimage.binary_erosion(calm, FOUR_CONNECTED, iterations=erode_px)
    if neck_depth_px > 0:
        depth = np.minimum(ndimage.distance_transform_edt(calm), NECK_CAP_PX)
        tops, count = ndimage.label(h_maxima(depth, neck_depth_px) & calm, FOUR_CONNECTED)
        seeds = watershed(TIE_BREAK * strength - depth, tops, mask=calm).astype(np.int32)
        rest, _ = ndimage.label(calm & (seeds == 0), FOUR_CONNECTED)  # areas too shallow to hold a top
        seeds = np.where(rest > 0, rest + count, seeds).astype(np.int32)
    else:
        seeds = ndimage.label(calm, FOUR_CONNECTED)[0].astype(np.int32)
    sizes = np.bincount(seeds.ravel())
    seeds[sizes[seeds] < min_px] = 0
    return seeds
