"""The embedded Ray session: local services only, on the loopback address."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import os
os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
from geoseg.run.session import ray_session
from geoseg.spec.job import parse_spec
spec = parse_spec({"inputs": {"bands": {"red": {"path": "r.tif"}, "nir": {"path": "n.tif"}}},
                   "models": [{"type": "crop_health"}], "output": {"path": "o.gpkg"},
                   "compute": {"num_cpus": 1, "object_store_mb": 100}})
with ray_session(None, spec):
    import ray
    print("ip", ray.util.get_node_ip_address())
    print("gcs", ray.get_runtime_context().gcs_address)
print("shut down", not ray.is_initialized())
"""


def test_embedded_ray_binds_to_loopback_and_shuts_down():
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert lines["ip"] == "127.0.0.1"
    assert lines["gcs"].startswith("127.0.0.1:")
    assert lines["shut"] == "down True"
