"""Inputs without units: digital numbers are said once (log, plan, job table) and read at scene-relative levels."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from geoseg.models.base import SceneInfo
from geoseg.models.crop_health.cpu import class_bounds
from geoseg.plan.job import DIGITAL_NUMBERS, describe, plan_job
from geoseg.spec.job import CropHealthSpec, parse_spec


def _naip_like(path: Path, dtype: str = "uint8") -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(20, 230, (4, 64, 64)).astype(dtype)
    profile = {"driver": "GTiff", "width": 64, "height": 64, "count": 4, "dtype": dtype, "crs": "EPSG:26914",
               "transform": Affine(5, 0, 480000, 0, -5, 5200000), "nodata": 0}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(pixels)


def _job(tmp_path: Path, **inputs: object) -> dict:
    return {
        "inputs": {"files": [str(tmp_path / "naip.tif")], "band_names": ["red", "green", "blue", "nir"], **inputs},
        "models": [{"type": "crop_health", "indices": ["ndvi"]}, {"type": "field_delineator"}],
        "output": {"path": str(tmp_path / "out.gpkg")},
    }


def test_integer_data_without_scale_is_digital_numbers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _naip_like(tmp_path / "naip.tif")
    with caplog.at_level(logging.WARNING):
        plan = plan_job(parse_spec(_job(tmp_path)))
    assert not plan.scene_info.reflectance
    assert [r.message for r in caplog.records].count(DIGITAL_NUMBERS) == 1
    assert not any("set inputs.scale" in r.message for r in caplog.records)  # one word on the units, not two
    assert "digital numbers" in describe(plan)
    assert set(plan.scene_info.percentiles) == {"green", "red", "nir"}  # the delineator's scene-relative levels
    assert "ndvi" in plan.scene_info.index_percentiles  # crop health's classes by the scene's percentiles
    assert plan_job(parse_spec(_job(tmp_path, scale=1 / 255))).scene_info.reflectance


def test_crop_health_classes_follow_the_units() -> None:
    table = np.linspace(-0.2, 0.8, 101)
    spec = CropHealthSpec(type="crop_health")
    reflectance = SceneInfo(("red", "nir"), "", (10, 10), 100, {}, {"ndvi": table})
    numbers = SceneInfo(("red", "nir"), "", (10, 10), 100, {}, {"ndvi": table}, reflectance=False)
    assert class_bounds(spec, reflectance) == (0.25, 0.45, 0.65)
    p = spec.percentiles
    expected = tuple(float(np.interp(q, np.arange(101), table)) for q in (p.non_vegetation, p.stressed, p.moderate))
    assert class_bounds(spec, numbers) == pytest.approx(expected)
    assert class_bounds(CropHealthSpec(type="crop_health", classes_by="thresholds"), numbers) == (0.25, 0.45, 0.65)


def test_float_digital_numbers_still_get_the_levels_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Float files are taken for reflectance: values far above 1 there still say which setting to change."""
    _naip_like(tmp_path / "naip.tif", dtype="float32")
    with caplog.at_level(logging.WARNING):
        plan = plan_job(parse_spec(_job(tmp_path)))
    assert plan.scene_info.reflectance
    assert any("set inputs.scale" in r.message for r in caplog.records)
