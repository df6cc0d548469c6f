"""``geoseg run``'s launch: Ray starts while the pipeline imports, and is shut down however the run ends (and fully).

Each case runs in a fresh Python process: the point is what happens to a Ray that process starts itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, os, sys
from pathlib import Path
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
from geoseg.errors import GeosegError
from geoseg.launch import launch_job
from geoseg.spec.job import parse_spec
from geoseg.testutils.scenes import field_job, write_field_scene

folder = Path(sys.argv[1])
case = sys.argv[2]
raw = field_job(write_field_scene(folder / "scene", 300, 260, cell=80), folder / "out.gpkg", num_cpus=2,
                object_store_mb=100)
if case == "output_exists":
    (folder / "out.gpkg").write_text("a user's file")
if case == "plan_fails":
    raw["aoi"] = {"wkt": "POLYGON((0 0,1 0,1 1,0 1,0 0))"}  # far from the scene: the plan rejects it (Ray is up)
report = {}
try:
    result = launch_job(parse_spec(raw), overwrite=False, resume=False, address=None, progress=False)
    report["layers"] = result.outputs.layers
    report["seconds"] = result.seconds
except GeosegError as err:
    report["error"] = type(err).__name__
report["ray_imported"] = "ray" in sys.modules
if report["ray_imported"]:
    import ray
    report["ray_up"] = ray.is_initialized()
print(json.dumps(report))
"""


def _probe(tmp_path: Path, case: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path), case], capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_run_started_early_writes_its_outputs_and_shuts_ray_down(tmp_path):
    report = _probe(tmp_path, "run")
    assert report["layers"]["fields"] > 0
    assert report["ray_up"] is False


def test_an_existing_output_fails_before_ray_starts(tmp_path):
    report = _probe(tmp_path, "output_exists")
    assert report == {"error": "OutputExistsError", "ray_imported": False}
    assert (tmp_path / "out.gpkg").read_text() == "a user's file"


def test_a_failed_plan_shuts_the_early_ray_down(tmp_path):
    report = _probe(tmp_path, "plan_fails")
    assert report["error"] in {"InputError", "SpecError"}
    assert report["ray_imported"] is True
    assert report["ray_up"] is False


SHUTDOWN_PROBE = """
import json, os
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
import ray
from geoseg.run.session import shutdown_ray
ray.init(address="local", num_cpus=1, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)
processes = {kind: [info.process for info in infos]
             for kind, infos in ray._private.worker._global_node.all_processes.items()}
plain_shutdown, at_shutdown = ray.shutdown, {}
def shutdown(**kwargs):
    at_shutdown["monitor"] = [p.poll() for p in processes["monitor"]]
    plain_shutdown(**kwargs)
ray.shutdown = shutdown
shutdown_ray()
print(json.dumps({"ray_up": ray.is_initialized(), "monitor_at_shutdown": at_shutdown["monitor"],
                  "exit_codes": {kind: [p.poll() for p in procs] for kind, procs in processes.items()}}))
"""


def test_shutdown_stops_every_process_ray_started_and_kills_the_monitor_first():
    proc = subprocess.run([sys.executable, "-c", SHUTDOWN_PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["ray_up"] is False
    codes = report["exit_codes"]
    assert {"raylet", "gcs_server", "monitor"} <= codes.keys()
    assert all(code is not None for kind in codes.values() for code in kind), codes  # none left running
    assert report["monitor_at_shutdown"] == [-9]  # SIGKILLed before Ray's shutdown began (no 1 s SIGTERM wait)
