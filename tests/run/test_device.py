"""compute.device: gpu waits for GPUs and fails in one line, never on CPU actors; auto says what it chose."""

from __future__ import annotations

import logging
import time

import pytest
import yaml

from geoseg.cli import main
from geoseg.errors import SpecError
from geoseg.pipeline import run_job
from geoseg.run.placement import ActorPlacement, place_actors
from geoseg.run.session import shutdown_ray
from geoseg.spec.job import ComputeSpec, parse_spec
from geoseg.testutils.scenes import field_job, write_field_scene


@pytest.fixture(scope="module")
def ray_without_gpus():
    """A local Ray with no GPUs at all, like a cluster whose GPU group is scaled to zero and cannot grow."""
    import ray

    if ray.is_initialized():
        shutdown_ray()
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=256 * 2**20)
    yield ray
    shutdown_ray()


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_field_scene(tmp_path_factory.mktemp("scene"), 300, 300, cell=100, seed=3)


def test_gpu_job_without_gpus_fails_in_one_line_after_its_timeout(ray_without_gpus, scene, tmp_path, capsys):
    raw = field_job(scene, tmp_path / "f.gpkg", device="gpu", gpus_per_actor=1, gpu_wait_s=3)
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(raw))
    start = time.monotonic()
    code = main(["run", str(spec), "--no-progress"])
    waited = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "compute.device gpu: the cluster gave no GPUs" in err and "within 3 s" in err
    assert waited >= 3
    assert not (tmp_path / "f.gpkg").exists()  # nothing ran on CPU actors instead
    groups = ray_without_gpus.util.placement_group_table().values()
    assert all(g["state"] == "REMOVED" for g in groups)  # the GPU request does not linger


def test_auto_without_gpus_logs_its_cpu_choice(ray_without_gpus, scene, tmp_path, caplog):
    raw = field_job(scene, tmp_path / "f.gpkg", device="auto", gpus_per_actor=0.5)
    with caplog.at_level(logging.INFO, logger="geoseg"):
        result = run_job(parse_spec(raw), progress=False)
    assert result.device == "cpu" and result.tiles_failed == 0
    assert "compute.device auto: asked for 0.5 GPU(s) per actor, the cluster has 0: CPU actors" in caplog.text


def test_cpu_device_ignores_gpu_shares(ray_without_gpus, caplog):
    with caplog.at_level(logging.INFO, logger="geoseg"):
        assert place_actors(ComputeSpec(device="cpu", gpus_per_actor=1)) == ActorPlacement("cpu", 0)
    assert "compute.device cpu: CPU actors" in caplog.text


def test_gpu_device_needs_a_gpu_share(minimal_spec):
    minimal_spec["compute"] = {"device": "gpu"}
    with pytest.raises(SpecError, match=r"compute\.device 'gpu' needs compute\.gpus_per_actor > 0"):
        parse_spec(minimal_spec)


def test_placement_options():
    assert ActorPlacement("cpu", 0).options(0) == {"num_gpus": 0, "num_cpus": 1}
    assert ActorPlacement("cuda", 0.5).options(1) == {"num_gpus": 0.5, "num_cpus": 0}
