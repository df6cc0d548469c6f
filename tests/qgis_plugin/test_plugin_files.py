"""The QGIS plugin's plain-Python parts, in geoseg's venv (no QGIS needed): finding and checking the geoseg
executable, running it with progress and cancel, the field job it writes, and the plugin zip."""

from __future__ import annotations

import ast
import configparser
import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import yaml

import geoseg
from geoseg.cli import main
from geoseg.errors import OutputExistsError
from geoseg.qgis_plugin import PLUGIN_NAME, build_plugin_zip, plugin_source
from geoseg.run.progress import ProgressReport
from geoseg.run.submit import JobState
from geoseg.spec.job import parse_spec

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "qgis" / PLUGIN_NAME
sys.path.insert(0, str(PLUGIN.parent))
from geoseg_qgis import fieldjob, runner  # noqa: E402

SAMPLE = REPO / "jobs" / "sample"


def _script(path: Path, body: str) -> str:
    """An executable Python script (geoseg's venv Python) standing in for a geoseg executable."""
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


# --------------------------------------------------------------------------------------------- finding geoseg
def test_a_setting_that_is_not_an_executable_is_one_message_with_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(runner.GeosegMissing, match=r"does not exist.*pip install \"geoseg>=0\.1\.0\""):
        runner.find_geoseg(str(tmp_path / "nope" / "geoseg"))


def test_nothing_found_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runner.ENV_VARIABLE, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(runner.GeosegMissing, match=r"not found \(not on PATH.*pip install"):
        runner.find_geoseg("", home=tmp_path)


def test_setting_then_environment_then_path_then_a_venv_in_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for folder in ("geoseg-env/bin", "path"):
        (tmp_path / folder).mkdir(parents=True)
    venv = _script(tmp_path / "geoseg-env" / "bin" / "geoseg", "")
    on_path = _script(tmp_path / "path" / "geoseg", "")
    given = _script(tmp_path / "given", "")
    monkeypatch.delenv(runner.ENV_VARIABLE, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert runner.find_geoseg("", home=tmp_path) == venv
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    assert runner.find_geoseg("", home=tmp_path) == on_path
    monkeypatch.setenv(runner.ENV_VARIABLE, given)
    assert runner.find_geoseg("", home=tmp_path) == given
    assert runner.find_geoseg(venv, home=tmp_path) == venv


def test_version_check_accepts_this_geoseg_and_refuses_an_old_one_or_another_program(tmp_path: Path) -> None:
    this = _script(
        tmp_path / "geoseg", f"import sys; sys.path.insert(0, {str(REPO)!r})\nfrom geoseg.cli import entry\nentry()\n"
    )
    assert runner.check_version(this) == geoseg.__version__
    old = _script(tmp_path / "old", "print('geoseg 0.0.9')\n")
    with pytest.raises(runner.GeosegMissing, match=r"is geoseg 0\.0\.9, older than 0\.1\.0.*install --upgrade"):
        runner.check_version(old)
    other = _script(tmp_path / "other", "import sys; print('usage: other', file=sys.stderr); sys.exit(2)\n")
    with pytest.raises(runner.GeosegMissing, match=r"did not report geoseg \(usage: other\)"):
        runner.check_version(other)


def test_geoseg_runs_without_qgis_python_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONHOME", "/usr/lib/qgis-python")
    monkeypatch.setenv("PYTHONPATH", "/usr/share/qgis/python")
    env = runner.clean_env()
    assert "PYTHONHOME" not in env and "PYTHONPATH" not in env and env["PYTHONUNBUFFERED"] == "1"


# --------------------------------------------------------------------------------------------- running geoseg
def test_progress_lines_parse_as_geoseg_writes_them() -> None:
    line = ProgressReport("tiles", 5, 1, 20).line()  # geoseg's own writer: the formats cannot drift apart
    assert runner.parse_progress(line) == runner.Progress("tiles", 5, 1, 20)
    assert runner.parse_progress(line).percent == 25.0
    assert runner.parse_progress("INFO tiles 5/20") is None


def test_written_outputs_parse_from_geoseg_run_lines() -> None:
    lines = [
        "geoseg-progress stage=tiles done=9 failed=0 total=9",
        "wrote /data/out/my fields.gpkg (crop_health: 902, fields: 371, tiles: 9) in 15.3 s on cpu",
        "wrote /data/out/my fields_fields.tif",
    ]
    written = runner.parse_written(lines)
    assert written == runner.Written(
        "/data/out/my fields.gpkg", {"crop_health": 902, "fields": 371, "tiles": 9}, ["/data/out/my fields_fields.tif"]
    )
    assert runner.parse_written(lines[:1]) is None


@pytest.mark.parametrize(
    ("status", "progress", "message", "expected"),
    [
        ("RUNNING", ProgressReport("tiles", 412, 0, 1024), "", ("RUNNING", 412, 1024, 0)),
        (
            "FAILED",
            ProgressReport("tiles", 7, 2, 9),
            "Job failed: exit 3\nmore than 1 tiles failed",
            ("FAILED", 7, 9, 2),
        ),
        ("PENDING", None, "", ("PENDING", 0, 0, 0)),
    ],
)
def test_cluster_status_parses_as_geoseg_status_prints_it(
    status: str, progress: ProgressReport | None, message: str, expected: tuple[str, int, int, int]
) -> None:
    line = JobState("raysubmit_abc", status, message, "geoseg run", progress).summary()  # geoseg's own writer
    parsed = runner.parse_status(["some log line", line])
    assert parsed is not None and parsed["SUMMARY"] == line
    assert (parsed["STATE"], parsed["TILES_DONE"], parsed["TILES_TOTAL"], parsed["TILES_FAILED"]) == expected
    assert runner.parse_status(["geoseg: error: no Ray head answers at http://x:8265"]) is None


_FAKE_JOB = """
import sys, time
try:
    for done in range(100):
        print(f"geoseg-progress stage=tiles done={done} failed=0 total=100", flush=True)
        print(f"log line {done}", file=sys.stderr, flush=True)
        time.sleep(0.05)
except KeyboardInterrupt:
    print("geoseg: interrupted; rerun with --resume to keep finished tiles", file=sys.stderr)
    sys.exit(130)
"""


def test_run_streams_lines_and_cancel_sends_sigint(tmp_path: Path) -> None:
    """A stand-in job (geoseg's real SIGINT path is run in QGIS by tests/qgis_plugin/test_in_qgis.py)."""
    job = _script(tmp_path / "job", _FAKE_JOB)
    seen: list[tuple[str, str]] = []
    outcome = runner.run(job, [], lambda stream, line: seen.append((stream, line)), lambda: len(seen) >= 6)
    assert outcome.canceled and outcome.returncode == 130
    assert outcome.error() == "geoseg: interrupted; rerun with 'Resume' checked to keep finished tiles"
    assert ("stdout", "geoseg-progress stage=tiles done=0 failed=0 total=100") in seen
    assert ("stderr", "log line 0") in seen
    assert len(outcome.stdout) < 20  # stopped long before the 100 lines


def test_a_job_that_ignores_sigint_is_terminated_after_the_grace_period(tmp_path: Path) -> None:
    job = _script(tmp_path / "stubborn", "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                  "print('started', flush=True)\ntime.sleep(60)\n")  # fmt: skip
    start = time.monotonic()
    outcome = runner.run(job, [], lambda stream, line: None, lambda: True, grace_s=1.0)
    assert outcome.canceled and outcome.returncode == -15 and time.monotonic() - start < 20


def test_errors_name_the_algorithm_options_instead_of_command_line_flags() -> None:
    outcome = runner.Outcome(
        2, stderr=["INFO ray", "geoseg: error: /d/f.gpkg exists; pass --overwrite or change output.path"]
    )
    assert (
        outcome.error() == "geoseg: error: /d/f.gpkg exists; check 'Overwrite existing outputs' or change output.path"
    )
    assert runner.Outcome(1, stderr=["Traceback", "MemoryError"]).error() == "MemoryError"
    assert runner.Outcome(-9).error() == "geoseg exited with code -9"


def test_a_finished_command_reports_its_exit_code_and_error_line(tmp_path: Path) -> None:
    job = _script(tmp_path / "bad", "import sys\nprint('geoseg: error: job.yaml: inputs.bands.red: no such file', "
                  "file=sys.stderr)\nsys.exit(2)\n")  # fmt: skip
    outcome = runner.run(job, [], lambda stream, line: None, lambda: False)
    assert (outcome.returncode, outcome.canceled) == (2, False)
    assert outcome.error() == "geoseg: error: job.yaml: inputs.bands.red: no such file"


# --------------------------------------------------------------------------------------------- the field job
def _sample_inputs() -> list[fieldjob.RasterInput]:
    return [
        fieldjob.RasterInput(str(SAMPLE / f"{b}.tif"), b, ("",))
        for b in ("B02", "B03", "B04", "B08", "B05", "B11", "B8A")
    ]


@pytest.mark.parametrize(
    ("text", "role"),
    [("B04", "red"), ("Red", "red"), ("SR_B5", "nir"), ("B8A", None), ("Near infrared (B08)", "nir"),
     ("red edge", "rededge"), ("SWIR 1", "swir16"), ("Band 1", None), ("", None)],
)  # fmt: skip
def test_band_roles_read_off_descriptions_and_layer_names(text: str, role: str | None) -> None:
    assert fieldjob.role_of(text) == role


def test_one_layer_per_band_and_one_multiband_layer() -> None:
    chosen = fieldjob.choose_bands(_sample_inputs())
    assert [(c.role, Path(c.path).stem, c.band) for c in chosen] == [
        ("blue", "B02", 1), ("green", "B03", 1), ("red", "B04", 1), ("nir", "B08", 1), ("rededge", "B05", 1),
        ("swir16", "B11", 1),
    ]  # fmt: skip
    stack = fieldjob.RasterInput("/data/naip.tif", "naip", ("Red", "Green", "Blue", "NIR"))
    assert [(c.role, c.band) for c in fieldjob.choose_bands([stack])] == [
        ("blue", 3), ("green", 2), ("red", 1), ("nir", 4)
    ]  # fmt: skip
    unnamed = fieldjob.RasterInput("/data/x.tif", "x", ("", "", "", ""))
    assert [(c.role, c.band) for c in fieldjob.choose_bands([unnamed], "blue, green ,red,nir")] == [
        ("blue", 1), ("green", 2), ("red", 3), ("nir", 4)
    ]  # fmt: skip
    assert [c.role for c in fieldjob.choose_bands([unnamed], "-,green,red,nir")] == ["green", "red", "nir"]


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        ("", r"no band for green, red, nir \(bands recognised: none\); set the band roles"),
        ("red,nir", r"lists 2 role\(s\) for 4 band\(s\)"),
        ("red,nir,green,ir", r"band role 'ir' is not one of blue, green, red, nir, rededge, swir16"),
        ("red,nir,green,red", r"two bands for red: 'band 1 of /data/x.tif' and 'band 4 of /data/x.tif'"),
        ("red,nir,-,-", r"no band for green"),
    ],
)
def test_band_role_mistakes_are_one_line_that_says_what_to_set(roles: str, message: str) -> None:
    with pytest.raises(fieldjob.FieldJobError, match=message):
        fieldjob.choose_bands([fieldjob.RasterInput("/data/x.tif", "x", ("", "", "", ""))], roles)


def test_the_field_job_spec_is_a_valid_geoseg_spec_like_the_sample_job(tmp_path: Path) -> None:
    job = fieldjob.FieldJob(
        "map-fields", str(tmp_path / "out" / "fields.gpkg"), 0.0001, 0.0, aoi=str(SAMPLE / "aoi.geojson"),
        datetime="2024-06-01T10:30:00Z",
    )  # fmt: skip
    text = fieldjob.spec_yaml(job, fieldjob.choose_bands(_sample_inputs()))
    spec = parse_spec(yaml.safe_load(text), tmp_path, "map_fields.yaml")
    sample = parse_spec(yaml.safe_load((REPO / "jobs" / "sample_fields.yaml").read_text()), REPO / "jobs", "sample")
    assert [m.model_dump() for m in spec.models] == [m.model_dump() for m in sample.models]
    assert spec.inputs.bands == sample.inputs.bands and spec.inputs.scale == sample.inputs.scale
    assert spec.output.path == str(tmp_path / "out" / "fields.gpkg") and spec.aoi and spec.inputs.datetime
    assert (spec.output.simplify, spec.output.min_area_m2, spec.output.masks) == (5, 5000, True)
    four = [fieldjob.RasterInput("/d/x.tif", "x", ("blue", "green", "red", "nir"), is_float=True)]
    aerial = parse_spec(yaml.safe_load(fieldjob.spec_yaml(job, fieldjob.choose_bands(four))), tmp_path, "x.yaml")
    assert [getattr(m, "indices", None) for m in aerial.models] == [["ndvi"], None]
    assert aerial.models[1].use_swir is False  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------- the plugin itself
def test_plugin_imports_only_qgis_gdal_and_the_standard_library() -> None:
    allowed = {"qgis", "osgeo", "processing"} | set(sys.stdlib_module_names)
    for path in PLUGIN.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            assert {n.split(".")[0] for n in names} <= allowed, f"{path.name} imports {names}"


def test_metadata_matches_geoseg_and_declares_a_processing_provider() -> None:
    meta = configparser.ConfigParser()
    meta.read(PLUGIN / "metadata.txt")
    general = meta["general"]
    assert general["version"] == geoseg.__version__
    assert general["hasProcessingProvider"] == "yes" and general["qgisMinimumVersion"] == "3.22"
    assert tuple(int(p) for p in geoseg.__version__.split(".")) >= runner.MIN_VERSION
    for key in ("name", "description", "about", "author", "email", "repository", "icon"):
        assert general[key], key
    assert (PLUGIN / general["icon"]).is_file()


# --------------------------------------------------------------------------------------------- the zip
def test_cli_writes_the_zip_with_the_plugin_folder_at_its_root_and_never_clobbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (PLUGIN / "__pycache__").mkdir(exist_ok=True)
    out = tmp_path / "geoseg_qgis.zip"
    assert main(["qgis-plugin", "--out", str(out)]) == 0
    names = zipfile.ZipFile(out).namelist()
    assert sorted(n for n in names if n.endswith("metadata.txt"))[0] == "geoseg_qgis/metadata.txt"  # QGIS's rule
    expected = {f"geoseg_qgis/{p.name}" for p in PLUGIN.iterdir() if p.is_file() and p.suffix != ".pyc"}
    assert set(names) == expected and not any("__pycache__" in n for n in names)
    first = out.read_bytes()
    assert main(["qgis-plugin", "--out", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and out.read_bytes() == first
    with pytest.raises(OutputExistsError):
        build_plugin_zip(out)
    assert build_plugin_zip(out, overwrite=True).read_bytes() == first  # the same sources give the same bytes


def test_an_installed_wheel_carries_the_plugin_sources(tmp_path: Path) -> None:
    """Build geoseg's wheel offline (the venv's setuptools) and find the plugin in it as an install would."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed in this environment (pip install setuptools) to build the wheel")
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(REPO / "pyproject.toml", tree)
    shutil.copy(REPO / "README.md", tree)
    for folder in ("geoseg", "qgis"):
        shutil.copytree(REPO / folder, tree / folder, ignore=shutil.ignore_patterns("__pycache__"))
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", "dist", "."]
    subprocess.run(build, cwd=tree, check=True, capture_output=True, timeout=300)
    site = tmp_path / "site"
    zipfile.ZipFile(next((tree / "dist").glob("geoseg-*.whl"))).extractall(site)
    probe = "from geoseg.qgis_plugin import plugin_source; print(plugin_source())"
    env = {**os.environ, "PYTHONPATH": str(site)}
    found = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert found.stdout.strip() == str(site / "geoseg_qgis"), found.stderr
    assert (site / "geoseg_qgis" / "metadata.txt").is_file() and (site / "geoseg_qgis" / "icon.svg").is_file()
    assert plugin_source() == PLUGIN  # from a checkout: the source tree
