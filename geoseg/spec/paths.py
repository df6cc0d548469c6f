"""Which paths of a spec are relative (a cluster job needs every path absolute or a URI)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from geoseg.spec.job import parse_spec

_RELATIVE_MARKER = "/geoseg-relative-base/"


_RELATIVE_BASE = Path(_RELATIVE_MARKER).joinpath(*["d"] * 64)  # deep enough for any "../"


def relative_paths(raw: Any, source: str = "spec") -> list[tuple[str, str]]:
    """Validate a raw spec and list its relative paths as (key, path) pairs, e.g. ("inputs.bands.red.path", ...).

    Found by resolving the spec against a marker folder: whatever lands under it was relative, so every path key
    the spec knows is covered. URIs and ``/vsi...`` paths are not relative.
    """
    spec = parse_spec(copy.deepcopy(raw), _RELATIVE_BASE, source)
    found: list[tuple[str, str]] = []

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                walk(item, f"{key}.{name}" if key else str(name))
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(item, f"{key}.{i}")
        elif isinstance(value, str) and value.startswith(_RELATIVE_MARKER):
            found.append((key, os.path.relpath(value, _RELATIVE_BASE)))

    walk(spec.model_dump(), "")
    return found
