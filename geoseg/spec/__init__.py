"""1. The job spec: typed, validated and normalised once at load time (YAML in, pydantic records out)."""

from geoseg.spec.job import (
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

__all__ = [
    "AoiSpec",
    "ComputeSpec",
    "InputSpec",
    "JobSpec",
    "ModelSpec",
    "OutputSpec",
    "TilingSpec",
    "json_schema",
    "load_spec",
    "parse_spec",
]
