"""Tests of geoseg.cli: validate, plan, schema; user errors as one line on stderr with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from geoseg import __version__
from geoseg.cli import main

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "jobs/sample_fields.yaml"
CONSOLE_SCRIPT = Path(sys.executable).parent / "geoseg"


def _one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("geoseg: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_validate_good_spec(write_spec, minimal_spec, capsys):
    path = write_spec(minimal_spec)
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: valid (1 model(s): crop_health)\n"
    assert err == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "inputs: {bands: {red: {path: r.tif}}}\nmodels: [{type: crop_health}]\noutput: {path: o.gpkg}\ncolour: 1\n",
            "colour: unknown key",
        ),
        ("inputs: [unclosed\n", "not valid YAML"),
        ("- a list\n", "must be a YAML mapping"),
        (
            "inputs: {bands: {red: {path: r.tif}}}\nmodels: [{type: crop_health}]\noutput: {path: o.shp}\n",
            "output.path",
        ),
    ],
    ids=["unknown key", "invalid yaml", "not a mapping", "not gpkg"],
)
def test_validate_bad_spec_is_one_line_exit_2(write_spec, capsys, text, expected):
    path = write_spec(text)
    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert expected in _one_error_line(err)


def test_validate_missing_spec(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read job spec" in _one_error_line(capsys.readouterr().err)


def test_schema_prints_json(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"inputs", "models", "output"} <= set(schema["properties"])


def test_plan_sample_job(capsys):
    assert main(["plan", str(SAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "768 x 768 px" in out
    assert "3 x 3 tiles of 256 px + 50 px halo" in out
    assert "tiles        9 to run" in out


def test_plan_with_a_missing_input_is_one_line(write_spec, minimal_spec, capsys):
    assert main(["plan", str(write_spec(minimal_spec))]) == 2
    assert "cannot open input raster" in _one_error_line(capsys.readouterr().err)


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"geoseg {__version__}"


def test_console_script(write_spec, minimal_spec):
    """The installed entry point runs, prints, and keeps errors to one line with exit status 2."""
    good = subprocess.run([str(CONSOLE_SCRIPT), "validate", str(SAMPLE)], capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == f"{SAMPLE}: valid (2 model(s): crop_health, fields)"
    minimal_spec["tiling"] = {"halo": 0}
    bad = subprocess.run(
        [str(CONSOLE_SCRIPT), "validate", str(write_spec(minimal_spec))], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert "tiling.halo" in _one_error_line(bad.stderr)


def test_run_with_an_unusable_output_folder_is_one_line(write_spec, tmp_path, capsys):
    """Checked before any work: no Ray start, no traceback, nothing written."""
    bands = {name: {"path": str(REPO / f"jobs/sample/{f}.tif")} for name, f in (("red", "B04"), ("nir", "B08"))}
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    spec = {"inputs": {"bands": bands}, "models": [{"type": "crop_health"}], "output": {"path": f"{blocker}/o.gpkg"}}
    assert main(["run", str(write_spec(spec)), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("geoseg: error: cannot create output folder") and "\n" not in err
    assert blocker.read_text() == "a file where a folder should be"


def test_validate_checks_the_bands_a_model_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """validate refuses what plan would: a model reading a band the job does not name (here red-edge for NDRE)."""
    spec = {
        "inputs": {"files": ["naip.tif"], "band_names": ["red", "green", "blue", "nir"]},
        "models": [{"type": "crop_health", "indices": ["ndre"]}, {"type": "field_delineator"}],
        "output": {"path": str(tmp_path / "o.gpkg")},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["validate", str(path)]) == 2
    assert "reads band(s) 'rededge'" in capsys.readouterr().err
    spec["models"] = [{"type": "field_delineator"}]  # no swir16: the bands decide, nothing to switch off
    path.write_text(yaml.safe_dump(spec))
    assert main(["validate", str(path)]) == 0
