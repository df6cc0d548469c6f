"""Run ``fiboa validate`` (fiboa-cli, in its own venv) without network access.

The validator downloads the schemas a file names; here they are served from the copies beside this script:

* ``fiboa-v0.3.0.yaml``   — https://fiboa.org/specification/v0.3.0/schema.yaml (fiboa/specification core/schema)
* ``vecorel-v0.1.0.yaml`` — https://vecorel.org/specification/v0.1.0/schema.yaml (vecorel/specification)
* ``geoparquet-v1.1.0.json`` — https://geoparquet.org/releases/v1.1.0/schema.json (opengeospatial/geoparquet)
* ``projjson-v0.7.json``  — https://proj.org/schemas/v0.7/projjson.schema.json (from PROJ's data folder)

Usage: ``/path/to/fiboa-venv/bin/python tests/data/fiboa/validate_offline.py FILE.parquet``
(``python -m venv /tmp/fiboavenv && /tmp/fiboavenv/bin/pip install fiboa-cli``; keep it out of geoseg's venv).
"""

import json
import sys
from pathlib import Path

import referencing
import referencing.jsonschema
import yaml
from vecorel_cli.validate_schema import ValidateSchema
from vecorel_cli.vecorel import util

HERE = Path(__file__).parent
util.file_cache.update(
    {
        "https://fiboa.org/specification/v0.3.0/schema.yaml": yaml.safe_load((HERE / "fiboa-v0.3.0.yaml").read_text()),
        "https://vecorel.org/specification/v0.1.0/schema.yaml": yaml.safe_load(
            (HERE / "vecorel-v0.1.0.yaml").read_text()
        ),
        "https://geoparquet.org/releases/v1.1.0/schema.json": json.loads((HERE / "geoparquet-v1.1.0.json").read_text()),
    }
)
PROJJSON = json.loads((HERE / "projjson-v0.7.json").read_text())


def retrieve(uri: str) -> referencing.Resource:
    """Only PROJJSON is referenced (by GeoParquet's schema); anything else would need the network."""
    if uri != PROJJSON["$id"]:
        raise LookupError(f"offline: no local copy of {uri}")
    return referencing.Resource.from_contents(PROJJSON, default_specification=referencing.jsonschema.DRAFT202012)


ValidateSchema.retrieve_remote_schema = staticmethod(retrieve)
sys.argv = ["fiboa", "validate", "-n", "-1", *sys.argv[1:]]
import fiboa_cli.cli.setup  # noqa: E402,F401  (builds and runs the CLI on import)
