"""geoseg: whole-region satellite and aerial image segmentation on Ray, exported as GIS-ready layers.

The Python API, for notebooks and scripts (the same steps as ``geoseg run``)::

    import geopandas as gpd
    import geoseg

    spec = geoseg.load_spec("jobs/sample_fields.yaml")
    print(geoseg.describe(geoseg.plan_job(spec)))      # scene grid, tiles, models: nothing runs yet
    result = geoseg.run_job(spec, overwrite=True)       # an embedded local Ray, or address="auto"
    fields = gpd.read_file(result.outputs.geopackage, layer="fields")

Names are imported on first use, so ``import geoseg`` stays light (the command line starts Ray meanwhile).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_HOMES = {
    "GeosegError": "geoseg.errors",
    "SpecError": "geoseg.errors",
    "InputError": "geoseg.errors",
    "OutputExistsError": "geoseg.errors",
    "TileFailedError": "geoseg.errors",
    "JobSpec": "geoseg.spec",
    "InputSpec": "geoseg.spec",
    "AoiSpec": "geoseg.spec",
    "TilingSpec": "geoseg.spec",
    "OutputSpec": "geoseg.spec",
    "ComputeSpec": "geoseg.spec",
    "ModelSpec": "geoseg.spec",
    "load_spec": "geoseg.spec",
    "parse_spec": "geoseg.spec",
    "json_schema": "geoseg.spec",
    "JobPlan": "geoseg.plan",
    "plan_job": "geoseg.plan",
    "describe": "geoseg.plan",
    "RunResult": "geoseg.pipeline",
    "run_job": "geoseg.pipeline",
}
"""Public name -> the module it lives in."""

__all__ = [
    "AoiSpec",
    "ComputeSpec",
    "GeosegError",
    "InputError",
    "InputSpec",
    "JobPlan",
    "JobSpec",
    "ModelSpec",
    "OutputExistsError",
    "OutputSpec",
    "RunResult",
    "SpecError",
    "TileFailedError",
    "TilingSpec",
    "__version__",
    "describe",
    "json_schema",
    "load_spec",
    "parse_spec",
    "plan_job",
    "run_job",
]

if TYPE_CHECKING:
    from geoseg.errors import GeosegError, InputError, OutputExistsError, SpecError, TileFailedError
    from geoseg.pipeline import RunResult, run_job
    from geoseg.plan import JobPlan, describe, plan_job
    from geoseg.spec import (
        AoiSpec,
        ComputeSpec,
        InputSpec,
        JobSpec,
        ModelSpec,
        OutputSpec,
        TilingSpec,
        json_schema,
        load_spec,
        parse_spec,
    )


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    if name not in _HOMES:
        raise AttributeError(f"module 'geoseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value
