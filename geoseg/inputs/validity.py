"""The up-front valid-pixel check: inputs with no pixel valid in every band (inside the AOI) are one error line.

Invalid means nodata (the file's or ``inputs.nodata``), masked, NaN or ±inf (:func:`geoseg.inputs.scene.read_window`).
"""

from __future__ import annotations

import logging

import numpy as np
from rasterio.windows import Window

from geoseg.errors import InputError
from geoseg.inputs.reads import OpenFiles
from geoseg.inputs.scene import Scene, read_window

log = logging.getLogger(__name__)

MAX_REFLECTANCE = 10.0
"""Reflectance above this (after ``inputs.scale``) cannot be right: the scale is wrong."""


def check_valid_pixels(scene: Scene, bands: tuple[str, ...], max_size: int = 1024, block: int = 512) -> None:
    """Fail with one line when no pixel of the scene/AOI is valid in every band (nodata, NaN and inf are invalid).

    A few small full-resolution windows spread over the scene answer at once for almost any real scene; then a
    decimated overview (which reads every block of a file without overviews); only when both find nothing is the
    scene scanned at full resolution (a few valid pixels must not be missed), and then each band is checked to name
    the empty one. Unreadable blocks are not judged here: they fail their own tiles, which the run reports.
    """
    if _any_valid_sample(scene, bands):
        return
    factor = max(1.0, max(scene.width, scene.height) / max_size)
    shape = (max(1, round(scene.height / factor)), max(1, round(scene.width / factor)))
    try:
        if read_window(scene, Window(0, 0, scene.width, scene.height), bands, out_shape=shape)[1].any():
            return
    except InputError:
        pass  # a corrupt block somewhere: look block by block
    found, unreadable = _any_valid(scene, bands, block)
    if found or unreadable:  # unreadable blocks may hold data: their tiles fail and are reported instead
        return
    for name in bands:
        if not _any_valid(scene, (name,), block)[0]:
            band = scene.band(name)
            raise InputError(
                f"band {name!r} ({', '.join(band.paths)}) holds no valid pixel in the scene/AOI (all nodata, NaN "
                f"or inf): check the file, inputs.nodata (now {scene.nodata}) and the AOI"
            )
    raise InputError(
        f"bands {', '.join(map(repr, bands))} never hold valid pixels at the same place in the scene/AOI: "
        "give bands whose valid areas overlap"
    )


def _any_valid_sample(scene: Scene, bands: tuple[str, ...], side: int = 64, grid: int = 3) -> bool:
    """Whether one of ``grid`` x ``grid`` windows of ``side`` px, spread over the scene, holds a valid pixel."""
    files = OpenFiles()
    try:
        for i in range(grid):
            for j in range(grid):
                row = (2 * i + 1) * scene.height // (2 * grid) - side // 2
                col = (2 * j + 1) * scene.width // (2 * grid) - side // 2
                if read_window(scene, Window(col, row, side, side), bands, files=files)[1].any():
                    return True
    except InputError:
        return False  # unreadable here: the checks below look further
    finally:
        files.close()
    return False


def _any_valid(scene: Scene, bands: tuple[str, ...], block: int) -> tuple[bool, bool]:
    """Whether a full-resolution block holds a pixel valid in every band, and whether a block could not be read."""
    unreadable = False
    for row in range(0, scene.height, block):
        for col in range(0, scene.width, block):
            win = Window(col, row, min(block, scene.width - col), min(block, scene.height - row))
            try:
                if read_window(scene, win, bands)[1].any():
                    return True, unreadable
            except InputError:
                unreadable = True
    return False, unreadable


def check_levels(scene: Scene, bands: tuple[str, ...]) -> str | None:
    """Whether the bands' values look like reflectance (what the models' thresholds assume), from a few sample
    windows: a warning that names what it sees and the setting to change, or None.

    Raises:
        InputError: ``inputs.scale`` is set and still gives reflectance above :data:`MAX_REFLECTANCE`.
    """
    values = _sample_values(scene, bands)
    if values.size == 0:
        return None
    low, high = float(values.min()), float(np.percentile(values, 99.9))
    raw_low, raw_high = (low - scene.offset) / scene.scale, (high - scene.offset) / scene.scale
    seen = f"values {raw_low:g}-{raw_high:g}"
    if high > MAX_REFLECTANCE and (scene.scale != 1.0 or scene.offset != 0.0):
        raise InputError(
            f"{seen} with inputs.scale {scene.scale:g} give reflectance up to {high:g}, which cannot be: "
            "fix inputs.scale (and inputs.offset)"
        )
    integral = bool(np.all(values == np.round(values)))
    if high > 1.5 and integral and raw_high <= 255:
        return f"{seen} look like 8-bit numbers, not reflectance (0-1): set inputs.scale (e.g. {1 / 255:.6f})"
    if high > 1.5:
        return f"{seen} look like digital numbers, not reflectance (0-1): set inputs.scale (Sentinel-2: 0.0001)"
    if 0 < high < 0.01:
        return f"{seen} give reflectance below 0.01 everywhere: is inputs.scale applied to reflectance already?"
    return None


def _sample_values(scene: Scene, bands: tuple[str, ...], side: int = 64, grid: int = 3) -> np.ndarray:
    """The valid values of ``grid`` x ``grid`` windows of ``side`` px spread over the scene (unreadable ones left
    out)."""
    files, found = OpenFiles(), []
    try:
        for i in range(grid):
            for j in range(grid):
                row = (2 * i + 1) * scene.height // (2 * grid) - side // 2
                col = (2 * j + 1) * scene.width // (2 * grid) - side // 2
                try:
                    pixels, valid = read_window(scene, Window(col, row, side, side), bands, files=files)
                except InputError:
                    continue
                found.append(pixels[:, valid].ravel())
    finally:
        files.close()
    return np.concatenate(found) if found else np.zeros(0, np.float32)
