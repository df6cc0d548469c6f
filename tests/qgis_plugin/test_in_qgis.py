"""The plugin in real QGIS (3.22 here; CI installs it): the zip installed into a fresh profile as "Install from
ZIP" does, its algorithms in ``qgis_process list``, *Map fields* and *Run job spec* on the sample through
``qgis_process`` and PyQGIS, outputs valid by QGIS's own check and loaded with their stored styles, Cancel stopping
geoseg through its SIGINT path (exit 130, finished tiles kept for Resume), and a missing or old geoseg.

The geoseg that QGIS runs is this checkout's, started by a small wrapper script from geoseg's venv: QGIS's own
Python never imports geoseg. Skipped where QGIS is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from geoseg.qgis_plugin import PLUGIN_NAME, build_plugin_zip
from geoseg.testutils.gis import QGIS_PROCESS, qgis_check_validity, qgis_env

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "jobs" / "sample"
QGIS_PYTHON = "/usr/bin/python3"
PROBE = Path(__file__).with_name("pyqgis_probe.py")
ALGORITHMS = ("geoseg:jobstatus", "geoseg:mapfields", "geoseg:runjobspec", "geoseg:submitjob")


def _pyqgis() -> bool:
    """Whether QGIS's Python bindings import in QGIS's Python (python3-qgis)."""
    if QGIS_PROCESS is None or not os.path.exists(QGIS_PYTHON):
        return False
    return subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True, timeout=60).returncode == 0


pytestmark = pytest.mark.skipif(not _pyqgis(), reason="QGIS and its Python are not installed (apt-get install qgis)")


def _env(profile: Path, **extra: str) -> dict[str, str]:
    """A headless QGIS on ``profile`` (QGIS_CUSTOM_CONFIG_PATH); GDAL writes no .aux.xml beside the sample."""
    env = {**qgis_env(profile), "QGIS_CUSTOM_CONFIG_PATH": str(profile), "GDAL_PAM_ENABLED": "NO", **extra}
    env.pop("GEOSEG_EXECUTABLE", None)
    env.update(extra)
    return env


def _qgis_process(profile: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(QGIS_PROCESS), *args], capture_output=True, text=True, env=_env(profile, **env), timeout=300
    )


def _install(profile: Path, zip_path: Path) -> Path:
    """Install the zip into a fresh profile with QGIS's own unzip (pyplugin_installer), then enable it."""
    plugins = profile / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    unzip = "import sys; from pyplugin_installer.unzip import unzip; unzip(sys.argv[1], sys.argv[2])"
    env = {**_env(profile), "PYTHONPATH": "/usr/share/qgis/python"}
    subprocess.run([QGIS_PYTHON, "-c", unzip, str(zip_path), str(plugins)], check=True, env=env, timeout=60)
    enabled = _qgis_process(profile, "plugins", "enable", PLUGIN_NAME)
    assert enabled.returncode == 0, enabled.stderr
    return plugins


@pytest.fixture(scope="module")
def geoseg_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout's geoseg as a command, the way a venv's ``bin/geoseg`` is one (the plugin drops PYTHONPATH)."""
    path = tmp_path_factory.mktemp("env") / "geoseg"
    path.write_text(f'#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m geoseg.cli "$@"\n')
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory, geoseg_exe: Path) -> Path:
    """A fresh QGIS profile with the plugin installed from the zip and the geoseg executable set in its options."""
    folder = tmp_path_factory.mktemp("qgis_profile")
    _install(folder, build_plugin_zip(folder / "geoseg_qgis.zip"))
    ini = folder / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.write_text(ini.read_text() + f"\n[Processing]\nConfiguration\\GEOSEG_EXECUTABLE={geoseg_exe}\n")
    return folder


def test_the_zip_installs_into_a_fresh_profile_and_qgis_process_lists_the_algorithms(profile: Path) -> None:
    plugins = _qgis_process(profile, "plugins")
    assert f"* {PLUGIN_NAME}" in plugins.stdout  # enabled, with a Processing provider
    listed = _qgis_process(profile, "list")
    assert listed.returncode == 0, listed.stderr
    assert [line.split("\t")[1] for line in listed.stdout.splitlines() if line.startswith("\tgeoseg:")] == list(
        ALGORITHMS
    )


def test_map_fields_on_the_sample_writes_layers_that_qgis_finds_valid(profile: Path, tmp_path: Path) -> None:
    bands = [f"INPUT={SAMPLE / name}.tif" for name in ("B02", "B03", "B04", "B08", "B05", "B11")]
    out = tmp_path / "map fields.gpkg"
    extra = [f"AOI={SAMPLE / 'aoi.geojson'}", "DATETIME=2024-06-01T15:50:00Z", f"OUTPUT={out}"]
    run = _qgis_process(profile, "--json", "run", "geoseg:mapfields", "--", *bands, *extra)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    report = json.loads(run.stdout)
    results, log = report["results"], report["log"]["info"]
    assert results["OUTPUT"] == str(out) and results["FIELDS"] == f"{out}|layername=fields"
    assert any(line.startswith("bands: blue = band 1 of") and "swir16 = band 1 of" in line for line in log)
    spec = yaml.safe_load(Path(results["SPEC"]).read_text())
    assert spec["aoi"]["path"].endswith(".geojson") and spec["inputs"]["datetime"] == "2024-06-01T15:50:00Z"
    counts = {line.split(":")[0]: line for line in log if " features, style " in line}
    assert "categorizedSymbol" in counts["fields"] and "categorizedSymbol" in counts["crop_health"]
    for layer in ("fields", "crop_health"):
        n = int(counts[layer].split(": ")[1].split()[0])
        valid = qgis_check_validity(out, layer, tmp_path)
        assert (valid["VALID_COUNT"], valid["INVALID_COUNT"], valid["ERROR_COUNT"]) == (n, 0, 0)
        assert n > 10
    assert not list(SAMPLE.glob("*.aux.xml"))


def _probe(profile: Path, algorithm: str, params: dict[str, object], *cancel_at: int) -> dict[str, Any]:
    plugins = profile / "profiles" / "default" / "python" / "plugins"
    args = [QGIS_PYTHON, str(PROBE), str(plugins), algorithm, json.dumps(params), *map(str, cancel_at)]
    proc = subprocess.run(args, capture_output=True, text=True, env=_env(profile), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_run_job_spec_cancel_stops_geoseg_and_resume_loads_the_styled_layers(profile: Path, tmp_path: Path) -> None:
    spec = yaml.safe_load((REPO / "jobs" / "sample_fields.yaml").read_text())
    for band in spec["inputs"]["bands"].values():
        band["path"] = str(REPO / "jobs" / band["path"])
    spec["output"]["path"] = str(tmp_path / "sample.gpkg")
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    params: dict[str, object] = {"SPEC": str(tmp_path / "job.yaml")}

    canceled = _probe(profile, "geoseg:runjobspec", params, 1)  # Cancel once one tile is done
    assert "canceled: geoseg stopped (exit 130)" in str(canceled["error"]), canceled
    assert canceled["progress"][0] == "tiles: 0/9" and not (tmp_path / "sample.gpkg").exists()
    kept = list((tmp_path / "sample.work" / "tiles").iterdir())
    assert 1 <= len(kept) < 9

    resumed = _probe(profile, "geoseg:runjobspec", {**params, "RESUME": True, "OVERWRITE": True})
    assert "error" not in resumed, resumed
    left = 9 - len(kept)
    assert resumed["progress"][-2:] == [f"tiles: {left}/{left}", "Loading resulting layers"]  # only missing tiles ran
    loaded = resumed["loaded"]
    assert {name: value[:2] for name, value in loaded.items()} == {
        "fields": [True, "categorizedSymbol"],  # the styles stored in the GeoPackage's layer_styles
        "crop_health": [True, "categorizedSymbol"],
        "tiles": [True, "singleSymbol"],
    }
    assert loaded["tiles"][2] == 9 and loaded["fields"][2] > 100
    project = resumed["project"]  # after the dialog's post-processing put them in the project: the stored styles
    assert project["fields"] == ["categorizedSymbol", ["healthy", "watch", "stressed", "bare", "not_observed"]]
    assert project["crop_health"][0] == "categorizedSymbol" and project["tiles"] == ["singleSymbol", "#787878"]


def test_cluster_algorithms_pass_on_geoseg_s_one_line_errors(profile: Path, tmp_path: Path) -> None:
    """No Ray cluster here (the real one is tests/run/test_ray_cluster.py, slow): geoseg's own refusals come through."""
    status = _qgis_process(profile, "run", "geoseg:jobstatus", "--", "JOB_ID=raysubmit_x", "ADDRESS=http://127.0.0.1:9")
    assert (
        status.returncode == 1 and "ERROR:\tgeoseg: error: no Ray head answers at http://127.0.0.1:9" in status.stderr
    )
    spec = tmp_path / "job.yaml"
    spec.write_text((REPO / "jobs" / "sample_fields.yaml").read_text())
    submit = _qgis_process(profile, "run", "geoseg:submitjob", "--", f"SPEC={spec}", "ADDRESS=http://127.0.0.1:9")
    assert submit.returncode == 1 and "is a relative path ('sample/B02.tif')" in submit.stderr, submit.stderr


@pytest.mark.parametrize(
    ("script", "message"),
    [
        (None, "does not exist or cannot be run; install it: python3 -m venv ~/geoseg-env && ~/geoseg-env/bin/pip "
               'install "geoseg>=0.1.0"'),
        ("echo geoseg 0.0.9", 'is geoseg 0.0.9, older than 0.1.0, which this plugin needs; upgrade it: '),
    ],
)  # fmt: skip
def test_a_missing_or_old_geoseg_is_one_message_with_the_install_command(
    tmp_path: Path, script: str | None, message: str
) -> None:
    folder = tmp_path / "fresh"
    _install(folder, build_plugin_zip(tmp_path / "geoseg_qgis.zip"))
    exe = tmp_path / "bin" / "geoseg"
    if script:
        exe.parent.mkdir()
        exe.write_text(f"#!/bin/sh\n{script}\n")
        exe.chmod(0o755)
    (tmp_path / "job.yaml").write_text("name: x\n")
    run = _qgis_process(folder, "run", "geoseg:runjobspec", "--", f"SPEC={tmp_path / 'job.yaml'}",
                        GEOSEG_EXECUTABLE=str(exe), PATH="/usr/bin:/bin")  # fmt: skip
    assert run.returncode == 1
    errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and message in errors[0], run.stdout + run.stderr
    assert zipfile.is_zipfile(tmp_path / "geoseg_qgis.zip")
