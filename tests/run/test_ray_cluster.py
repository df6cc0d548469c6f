"""A real Ray cluster, end to end: `ray start` processes (a head with the job server, a worker node with a GPU),
the sample job submitted with `geoseg submit`, followed with `geoseg status`, its GeoPackage compared with an
embedded run's. The GPU is logical (CUDA is absent here): model actors that ask for one must land on the worker
node, where torch runs them on the CPU."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
import yaml

from geoseg.cli import main
from geoseg.pipeline import run_job
from geoseg.run.actors import ModelActor
from geoseg.spec.job import load_spec
from geoseg.testutils.ray_cluster import LocalRayCluster

pytestmark = pytest.mark.slow  # about 2 minutes on 2 cores: .ci/run runs it after the default suite

REPO = Path(__file__).resolve().parents[2]
WORKER_IP = "127.0.0.3"


@pytest.fixture(scope="module")
def ray_cluster():
    cluster = LocalRayCluster()
    try:
        cluster.start_head(num_cpus=1)
        cluster.add_node(WORKER_IP, num_cpus=1, num_gpus=1)
        cluster.wait_for_nodes(2)
        yield cluster
    finally:
        cluster.stop()
        assert not cluster.processes(), "processes of the test cluster survived its stop"


def _sample_spec(folder: Path, compute: dict[str, Any]) -> Path:
    """jobs/sample_fields.yaml with absolute paths (a cluster job's rule), writing into ``folder``."""
    raw = yaml.safe_load((REPO / "jobs" / "sample_fields.yaml").read_text())
    for ref in raw["inputs"]["bands"].values():
        ref["path"] = str(REPO / "jobs" / ref["path"])
    raw["output"]["path"] = str(folder / "out" / "sample_fields.gpkg")
    raw["compute"] = {**raw["compute"], **compute}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _follow(capsys: pytest.CaptureFixture[str], job_id: str, address: str, timeout: float = 300) -> list[str]:
    """`geoseg status` once a second until the job ends; every line it printed."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, out, _ = _cli(capsys, "status", job_id, "--address", address)
        lines.append(out.strip())
        if re.search(r"\s(SUCCEEDED|FAILED|STOPPED)\b", out):
            return lines
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not end within {timeout} s: {lines[-3:]}")


def _same_layer(a: Path, b: Path, layer: str) -> None:
    left = gpd.read_file(a, layer=layer).sort_values("id").reset_index(drop=True)
    right = gpd.read_file(b, layer=layer).sort_values("id").reset_index(drop=True)
    assert len(left) == len(right) > 0
    assert list(left.columns) == list(right.columns)
    assert left.geometry.geom_equals_exact(right.geometry, tolerance=0).all()
    attributes = [c for c in left.columns if c != "geometry"]
    assert left[attributes].equals(right[attributes])


def test_submit_follow_and_fetch_match_an_embedded_run(ray_cluster, tmp_path, capsys):
    address = ray_cluster.dashboard
    spec = _sample_spec(tmp_path / "cluster", {"device": "gpu", "gpus_per_actor": 1, "gpu_wait_s": 60})
    code, out, err = _cli(capsys, "submit", str(spec), "--address", address)
    assert code == 0, err
    job_id = out.strip()

    lines = _follow(capsys, job_id, address)
    assert lines[-1].split()[:2] == [job_id, "SUCCEEDED"], lines[-1]
    assert "tiles 9/9" in lines[-1]
    code, log, _ = _cli(capsys, "logs", job_id, "--address", address)
    assert code == 0 and "compute.device gpu: GPU actors" in log and "stage=tiles done=9" in log

    from ray.util.state import list_actors, list_nodes

    gpu_nodes = {n.node_id for n in list_nodes(address=address) if n.node_ip == WORKER_IP}
    runners = list_actors(address=address, filters=[("class_name", "=", ModelActor.__name__)])
    assert runners and {a.node_id for a in runners} <= gpu_nodes  # the model actor sat on the GPU node

    embedded = _sample_spec(tmp_path / "embedded", {})
    run_job(load_spec(embedded), progress=False)
    for layer in ("fields", "crop_health"):
        _same_layer(tmp_path / "cluster/out/sample_fields.gpkg", tmp_path / "embedded/out/sample_fields.gpkg", layer)


def test_stop_and_unknown_id(ray_cluster, tmp_path, capsys):
    address = ray_cluster.dashboard
    spec = _sample_spec(tmp_path, {})
    code, out, _ = _cli(capsys, "submit", str(spec), "--address", address, "--submission-id", "geoseg-stop-test")
    assert (code, out.strip()) == (0, "geoseg-stop-test")
    code, out, _ = _cli(capsys, "stop", "geoseg-stop-test", "--address", address)
    assert code == 0 and "stopping" in out
    assert " STOPPED" in _follow(capsys, "geoseg-stop-test", address)[-1]

    code, _, err = _cli(capsys, "status", "no-such-job", "--address", address)
    assert code == 2
    assert err.count("\n") == 1 and "no-such-job does not exist" in err


def test_gpu_job_wanting_more_gpus_than_the_cluster_has_fails_in_one_line(ray_cluster, tmp_path, capsys):
    address = ray_cluster.dashboard
    spec = _sample_spec(tmp_path, {"device": "gpu", "gpus_per_actor": 2, "gpu_wait_s": 3})
    code, out, _ = _cli(capsys, "submit", str(spec), "--address", address)
    job_id = out.strip()
    last = _follow(capsys, job_id, address)[-1]
    assert last.startswith(f"{job_id}  FAILED  geoseg: error: compute.device gpu: the cluster gave no GPUs"), last
    code, log, _ = _cli(capsys, "logs", job_id, "--follow", "--address", address)  # an ended job: returns
    assert code == 0 and "within 3 s" in log and "Traceback" not in log
    assert not (tmp_path / "out" / "sample_fields.gpkg").exists()
