"""A node removed from a (simulated) multi-node Ray cluster in the middle of a job: the job still completes, with
the same outputs as on the intact cluster."""

from __future__ import annotations

import threading

import pytest

from geoseg.pipeline import run_job
from geoseg.run.session import shutdown_ray
from geoseg.spec.job import parse_spec
from geoseg.testutils.faults import assert_same_outputs, wait_for_tiles
from geoseg.testutils.scenes import field_job, write_field_scene


@pytest.fixture
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        shutdown_ray()
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False, "object_store_memory": 2**27}
    )
    cluster.add_node(num_cpus=2, object_store_memory=2**27)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    shutdown_ray()
    cluster.shutdown()


def test_node_removed_mid_job_completes(tmp_path, cluster):
    scene = write_field_scene(tmp_path / "scene", 512, 512, cell=100, seed=3)
    reference = tmp_path / "ref.gpkg"
    assert run_job(parse_spec(field_job(scene, reference, tile_size=64)), progress=False).tiles_failed == 0

    worker = cluster.worker_nodes.copy().pop()
    removed = threading.Event()

    def remove_worker() -> None:
        wait_for_tiles(tmp_path / "o.work", 8)
        cluster.remove_node(worker)
        removed.set()

    thread = threading.Thread(target=remove_worker, daemon=True)
    thread.start()
    result = run_job(parse_spec(field_job(scene, tmp_path / "o.gpkg", tile_size=64)), progress=False)
    thread.join(timeout=60)
    assert removed.is_set(), "the node was not removed mid-job"
    assert result.tiles_failed == 0
    assert_same_outputs(tmp_path / "o.gpkg", reference)
