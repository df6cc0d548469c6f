"""Faults during a job: a model actor killed, the driver killed or interrupted, tiles that keep failing.

Each test compares against an uninterrupted run of the same job: nothing lost, nothing done twice in the output.
Processes are only ever signalled if this test started them (the CLI subprocess, or this process's own actors).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from geoseg.errors import TooManyFailedTilesError
from geoseg.pipeline import run_job
from geoseg.spec.job import parse_spec
from geoseg.testutils.faults import (
    assert_same_outputs,
    descendants,
    kill_model_actors,
    saved_tiles,
    wait_for_tiles,
)
from geoseg.testutils.scenes import FieldScene, field_job, write_field_scene

pytestmark = pytest.mark.usefixtures("ray_local")

REPO = Path(__file__).resolve().parents[2]
TILE = 64


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> FieldScene:
    """512 x 512 px of fields: 64 tiles of 64 px."""
    return write_field_scene(tmp_path_factory.mktemp("faults") / "scene", 512, 512, cell=100, seed=3)


def _job(scene: FieldScene, output: Path, tile_size: int = TILE, **compute: Any) -> dict[str, Any]:
    return field_job(scene, output, tile_size=tile_size, **({"num_cpus": 2, "object_store_mb": 128} | compute))


@pytest.fixture(scope="module")
def uninterrupted(scene, tmp_path_factory, ray_local) -> Path:
    """The reference: the job run once without faults."""
    out = tmp_path_factory.mktemp("reference") / "ref.gpkg"
    result = run_job(parse_spec(_job(scene, out)), progress=False)
    assert result.tiles_failed == 0 and result.tiles_done == 64
    return out


FINE = 32
"""Tile size of the signal tests (256 tiles on the module's scene): a kill or an interrupt lands with seconds of
tile work left."""


@pytest.fixture(scope="module")
def uninterrupted_fine(scene, tmp_path_factory, ray_local) -> Path:
    """The reference of the driver-kill test: the job in 256 tiles, run once without faults."""
    out = tmp_path_factory.mktemp("reference-fine") / "ref.gpkg"
    result = run_job(parse_spec(_job(scene, out, tile_size=FINE)), progress=False)
    assert result.tiles_failed == 0 and result.tiles_done == 256
    return out


# --------------------------------------------------------------------------------------------- in-process faults
def test_killed_model_actor_restarts_and_every_tile_is_done_once(tmp_path, scene, uninterrupted):
    out = tmp_path / "killed.gpkg"
    killed: list[int] = []

    def killer() -> None:
        for count in (6, 24):  # twice: the restarted actor is killed too
            wait_for_tiles(tmp_path / "killed.work", count)
            killed.extend(kill_model_actors())

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    result = run_job(parse_spec(_job(scene, out)), progress=False)
    thread.join(timeout=60)
    assert len(killed) == 2, "the actor was not killed twice mid-job"
    assert result.tiles_failed == 0
    assert_same_outputs(out, uninterrupted)


def test_a_hung_actor_is_killed_restarted_and_its_tiles_retried(tmp_path, scene, uninterrupted, caplog):
    """The model actor stopped (SIGSTOP, as a hung GPU driver leaves it): past compute.tile_timeout_s the loop
    kills it, Ray restarts it, its tiles go again, and the log says so."""
    out = tmp_path / "hung.gpkg"
    stopped: list[int] = []

    def stopper() -> None:
        wait_for_tiles(tmp_path / "hung.work", 6)
        for proc in descendants("ray::ModelActor"):
            if "__init__" not in " ".join(proc.cmdline()):
                proc.send_signal(signal.SIGSTOP)
                stopped.append(proc.pid)

    thread = threading.Thread(target=stopper, daemon=True)
    thread.start()
    try:
        with caplog.at_level("WARNING", logger="geoseg.run.loop"):
            result = run_job(parse_spec(_job(scene, out, tile_timeout_s=4)), progress=False)
    finally:
        thread.join(timeout=60)
        for pid in stopped:  # killed by the loop already; never leave a stopped process behind
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
    assert stopped, "the actor was not stopped mid-job"
    assert "no result after 4 s (compute.tile_timeout_s); actor" in caplog.text
    assert "killed and restarted; retrying" in caplog.text
    assert result.tiles_failed == 0
    assert_same_outputs(out, uninterrupted)


def test_max_failed_tiles_stops_the_job_early(tmp_path, scene):
    """Corrupt pixels in the middle of a band: with max_failed_tiles 0 the first failure stops the job."""
    folder = tmp_path / "scene"
    folder.mkdir()
    for band in ("red", "nir"):
        (folder / f"{band}.tif").write_bytes(getattr(scene, band).read_bytes())
    data = bytearray((folder / "nir.tif").read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = b"\xff" * 4096
    (folder / "nir.tif").write_bytes(bytes(data))
    raw = _job(scene, tmp_path / "o.gpkg", max_retries=0, max_failed_tiles=0)
    raw["inputs"]["bands"] = {"red": {"path": str(folder / "red.tif")}, "nir": {"path": str(folder / "nir.tif")}}
    with pytest.raises(TooManyFailedTilesError, match=r"stopped after 1 failed tiles \(compute.max_failed_tiles=0"):
        run_job(parse_spec(raw), progress=False)
    assert TooManyFailedTilesError.exit_code == 3
    assert not (tmp_path / "o.gpkg").exists()  # stopped: no outputs
    assert 0 < saved_tiles(tmp_path / "o.work") < 64  # finished tiles kept for --resume


# --------------------------------------------------------------------------------------------- the driver killed
def _start_cli(job: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "geoseg.cli", "run", str(job), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group: cleaned up below, whatever happens
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    """SIGINT as a terminal's foreground job has it: a shell starts background jobs (a CI script run with ``&``)
    with SIGINT ignored, the CLI inherits that and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _write(job: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(job))
    return path


def _end(proc: subprocess.Popen[str], family: list[psutil.Process], timeout: float = 120) -> tuple[int, str, list[int]]:
    """Wait for the CLI to exit; return its exit code, its stderr and the pids of ``family`` still alive 30 s
    later. Then kill whatever is left of its process group (only what this test started)."""
    try:
        _, err = proc.communicate(timeout=timeout)
        _, alive = psutil.wait_procs(family, timeout=30)
        return proc.returncode, err, [p.pid for p in alive]
    finally:
        for p in family:
            with contextlib.suppress(psutil.Error):
                p.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def test_sigkill_driver_then_resume_equals_uninterrupted(tmp_path, scene, uninterrupted_fine):
    job = _write(_job(scene, tmp_path / "o.gpkg", tile_size=FINE), tmp_path / "job.yaml")
    proc = _start_cli(job)
    done = wait_for_tiles(tmp_path / "o.work", 8, alive=lambda: proc.poll() is None)
    family = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
    proc.send_signal(signal.SIGKILL)
    code, _, _ = _end(proc, family)
    assert code == -signal.SIGKILL
    kept = saved_tiles(tmp_path / "o.work")
    assert 8 <= done <= kept < 256, "the driver was not killed partway"
    assert not (tmp_path / "o.gpkg").exists()

    result = run_job(parse_spec(_job(scene, tmp_path / "o.gpkg", tile_size=FINE)), resume=True, progress=False)
    assert result.tiles_resumed == kept and result.tiles_failed == 0
    assert_same_outputs(tmp_path / "o.gpkg", uninterrupted_fine, tiles=256)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupt_shuts_ray_down_and_keeps_finished_tiles(tmp_path, sig, code):
    # 1024 tiles of FINE px: after the first 4 the job has seconds of tile work left for the signal to land in
    scene = write_field_scene(tmp_path / "scene", 1024, 1024, cell=100, seed=3)
    job = _write(_job(scene, tmp_path / "o.gpkg", tile_size=FINE), tmp_path / "job.yaml")
    proc = _start_cli(job)
    wait_for_tiles(tmp_path / "o.work", 4, alive=lambda: proc.poll() is None)
    assert proc.poll() is None, "the job ended before it could be interrupted"
    family = psutil.Process(proc.pid).children(recursive=True)
    assert any("raylet" in " ".join(p.cmdline()) for p in family)  # an embedded Ray is running
    proc.send_signal(sig)
    returncode, err, alive = _end(proc, family, timeout=90)
    assert returncode == code, err
    assert err.strip().splitlines()[-1].startswith("geoseg: ") and "Traceback" not in err
    assert "rerun with --resume" in err
    assert not alive, f"Ray processes outlived the driver: {alive}"
    assert 4 <= saved_tiles(tmp_path / "o.work") < 1024
