"""Fixtures shared by several test modules: job specs in a temporary folder, one local Ray per module."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from geoseg.run.session import shutdown_ray

SpecWriter = Callable[..., Path]

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray binds to 127.0.0.1
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="module")
def ray_local():
    """A 2-CPU local Ray with one *logical* GPU (tests GPU scheduling; CUDA itself is absent here)."""
    import ray

    if ray.is_initialized():
        shutdown_ray()
    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=1,
        include_dashboard=False,
        object_store_memory=256 * 2**20,
        log_to_driver=False,
    )
    yield ray
    shutdown_ray()


@pytest.fixture
def minimal_spec() -> dict[str, Any]:
    """The smallest valid job spec as a fresh mapping (relative paths; nothing needs to exist)."""
    return {
        "inputs": {"bands": {"red": {"path": "red.tif"}, "nir": {"path": "nir.tif"}}},
        "models": [{"type": "crop_health"}],
        "output": {"path": "out/result.gpkg"},
    }


@pytest.fixture
def write_spec(tmp_path: Path) -> SpecWriter:
    """Write a spec (a mapping, dumped as YAML, or raw YAML text) into ``tmp_path``; returns its path."""

    def write(spec: dict[str, Any] | str, name: str = "job.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
        return path

    return write
