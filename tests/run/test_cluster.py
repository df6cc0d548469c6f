"""The same job on a (simulated) multi-node Ray cluster, connected to by address like a real one."""

from __future__ import annotations

import geopandas as gpd
import pytest

from geoseg.pipeline import run_job
from geoseg.run.session import shutdown_ray
from geoseg.spec.job import parse_spec
from geoseg.testutils.scenes import field_job, write_field_scene


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        shutdown_ray()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=2, num_gpus=1)  # a "GPU" worker node (logical GPU; CUDA is absent here)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def test_job_on_two_node_cluster_matches_truth(tmp_path, cluster):
    scene = write_field_scene(tmp_path / "scene", 700, 600, cell=150, seed=5)
    raw = field_job(scene, tmp_path / "f.gpkg", tile_size=256, gpus_per_actor=1)
    result = run_job(parse_spec(raw), address=cluster.address, progress=False)
    fields = gpd.read_file(tmp_path / "f.gpkg", layer="fields")
    assert result.tiles_failed == 0
    assert len(fields) == len(scene.boxes)
