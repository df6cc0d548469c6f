"""The up-front valid-pixel check: inputs with no pixel valid in every band (inside the AOI) are one error line.

Invalid means nodata (the file's or ``inputs.nodata``), masked, NaN or ±inf (:func:`geoseg.inputs.scene.read_window`).
"""

from __future__ import annotations

from rasterio.windows import Window

from geoseg.errors import InputError
from geoseg.inputs.reads import OpenFiles
from geoseg.inputs.scene import Scene, read_window


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
