"""Cluster submission without a cluster: spec checks, progress lines, and one-line errors for a missing head.
The real cluster path is tests/run/test_ray_cluster.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from geoseg.cli import main
from geoseg.errors import SpecError
from geoseg.run.progress import ProgressReport, TileProgress, last_progress
from geoseg.run.submit import check_cluster_spec
from geoseg.spec.job import load_spec, read_spec_yaml
from geoseg.spec.paths import relative_paths
from geoseg.testutils.ray_cluster import free_port

REPO = Path(__file__).resolve().parents[2]


def _absolute_spec(folder: Path) -> Path:
    raw = {
        "inputs": {"bands": {"red": {"path": "/data/s2/B04.tif"}, "nir": {"path": "s3://bucket/s2/B08.tif"}}},
        "models": [{"type": "crop_health"}],
        "output": {"path": "/data/out/x.gpkg"},
    }
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_relative_paths_are_refused_with_the_key_and_the_reason():
    with pytest.raises(SpecError) as err:
        check_cluster_spec(REPO / "jobs" / "sample_fields.yaml")
    message = str(err.value)
    assert "inputs.bands.blue.path is a relative path ('sample/B02.tif') (+6 more)" in message
    assert "absolute paths on storage every node mounts" in message and "\n" not in message


def test_absolute_paths_and_uris_pass(tmp_path):
    check_cluster_spec(_absolute_spec(tmp_path))


def test_submit_refuses_a_relative_spec_before_contacting_a_head(capsys):
    code = main(["submit", str(REPO / "jobs" / "sample_fields.yaml"), "--address", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "relative path" in err


def test_unreachable_head_is_one_line(tmp_path):
    """As a user sees it: the console command, its whole stderr, its exit code."""
    address = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for argv in (["submit", str(_absolute_spec(tmp_path))], ["status", "some-id"]):
        proc = subprocess.run(
            [sys.executable, "-m", "geoseg.cli", *argv, "--address", address],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1
        assert proc.stderr.startswith(f"geoseg: error: no Ray head answers at {address}: is the cluster up")


def test_no_address_anywhere_is_one_line(monkeypatch, capsys):
    for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    assert main(["status", "some-id"]) == 2
    assert capsys.readouterr().err == (
        "geoseg: error: no Ray head given: pass --address http://HEAD:8265 (or set RAY_API_SERVER_ADDRESS)\n"
    )


def test_progress_lines_are_what_status_reads(capsys):
    with TileProgress(3, enabled="lines") as bar:
        for status in ("done", "retrying", "failed", "done"):
            bar.advance(status)
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "geoseg-progress stage=tiles done=0 failed=0 total=3"
    assert last_progress("noise\n" + out + "INFO wrote x\n") == ProgressReport("tiles", 3, 1, 3)
    assert last_progress("no progress yet\n") is None


def test_the_infra_sample_is_the_sample_job_on_cluster_paths():
    infra = REPO / "infra" / "sample_fields_cluster.yaml"
    check_cluster_spec(infra)
    cluster, local = load_spec(infra), load_spec(REPO / "jobs" / "sample_fields.yaml")
    assert (cluster.models, cluster.tiling) == (local.models, local.tiling)
    assert cluster.inputs.bands and local.inputs.bands
    names = {k: Path(str(b.path)).name for k, b in cluster.inputs.bands.items()}
    assert names == {k: Path(str(b.path)).name for k, b in local.inputs.bands.items()}
    assert cluster.compute.device == "gpu"


def test_every_path_key_is_checked_including_masks_and_stac_items():
    """relative_paths finds paths by resolving against a marker folder, so keys added later are covered too."""
    landsat = dict(relative_paths(read_spec_yaml(REPO / "jobs" / "landsat_fields.yaml")))
    stac = dict(relative_paths(read_spec_yaml(REPO / "jobs" / "sample_stac.yaml")))
    assert landsat["inputs.mask.path"].endswith("BQA.tif") and "inputs.stac" in stac
    assert all("output.path" in dict(relative_paths(read_spec_yaml(job))) for job in (REPO / "jobs").glob("*.yaml"))
