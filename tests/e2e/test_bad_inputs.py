"""The bad-input matrix: mistakes a user makes, each answered through the real CLI with one line that says what to
change, a non-zero exit code, no traceback, and nothing new left on disk.

Each case starts from a valid tiny job (two 64 x 64 bands in UTM 33N, crop health) in its own folder, makes one
mistake, and runs ``geoseg run``. Cases that get past planning use the module's local Ray.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import shapely.affinity
import yaml

from geoseg.cli import main
from geoseg.plan.job import input_files, plan_job
from geoseg.run import workdir
from geoseg.spec.job import load_spec
from geoseg.testutils.rasters import ORIGIN, utm_transform, write_raster

Edit = Callable[[dict[str, Any], Path], None]


@dataclass(frozen=True)
class Mistake:
    """One user mistake: how it changes the valid job, and what the one-line answer must say."""

    id: str
    edit: Edit
    says: str
    """Substring of the error line: the thing to change."""
    exit_code: int = 2


def _bands(folder: Path, rows: int = 64, cols: int = 64) -> None:
    rng = np.random.default_rng(0)
    write_raster(folder / "red.tif", rng.integers(300, 900, (rows, cols)).astype("uint16"), nodata=0)
    write_raster(folder / "nir.tif", rng.integers(2000, 4000, (rows, cols)).astype("uint16"), nodata=0)


def _valid_job(folder: Path) -> dict[str, Any]:
    return {
        "name": "tiny",
        "inputs": {"bands": {"red": {"path": "red.tif"}, "nir": {"path": "nir.tif"}}, "scale": 0.0001},
        "tiling": {"tile_size": 32, "halo": 4},
        "models": [{"type": "crop_health"}],
        "output": {"path": "out/tiny.gpkg"},
        "compute": {"batch_size": 2},
    }


def _set(path: str, value: Any) -> Edit:
    """An edit that sets a dotted key of the spec (digits index lists: ``models.0.type``)."""

    def edit(spec: dict[str, Any], folder: Path) -> None:
        *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        node: Any = spec
        for key in parents:
            node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
        node[last] = value

    return edit


def _both(first: Edit, second: Edit) -> Edit:
    def edit(spec: dict[str, Any], folder: Path) -> None:
        first(spec, folder)
        second(spec, folder)

    return edit


def _raw(text: str | bytes) -> Edit:
    """An edit that replaces the whole spec file with ``text``."""

    def edit(spec: dict[str, Any], folder: Path) -> None:
        spec.clear()
        spec["__raw__"] = text

    return edit


def _alias_bomb(levels: int = 6, width: int = 9) -> str:
    """A billion-laughs spec: ``width ** levels`` references through nested aliases, under ``inputs``."""
    lines = ["a: &l0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join([*lines, f"inputs: *l{levels}", "models: [{type: crop_health}]", "output: {path: o.gpkg}"])


def _utm_aoi(wkt: str) -> dict[str, str]:
    """An AOI in the test rasters' CRS, ``wkt``'s coordinates relative to their top-left corner."""
    geom = shapely.affinity.translate(shapely.from_wkt(wkt), *ORIGIN)
    return {"wkt": geom.wkt, "crs": "EPSG:32633"}


def _file(name: str, write: Callable[[Path], object], then: Edit | None = None) -> Edit:
    """An edit that writes a file into the job folder (and optionally changes the spec)."""

    def edit(spec: dict[str, Any], folder: Path) -> None:
        write(folder / name)
        if then is not None:
            then(spec, folder)

    return edit


def _nir_values(values: np.ndarray, **kwargs: Any) -> Edit:
    return _file("nir.tif", lambda p: write_raster(p, values, **kwargs))


def _full(fill: float) -> np.ndarray:
    return np.full((64, 64), fill, "float32")


def _disjoint_valid_areas(spec: dict[str, Any], folder: Path) -> None:
    """Red valid in the left half only, NIR in the right half only: no pixel is valid in both."""
    left = np.zeros((64, 64), "uint16")
    left[:, :32] = 500
    write_raster(folder / "red.tif", left, nodata=0)
    write_raster(folder / "nir.tif", left[:, ::-1].copy(), nodata=0)


def _two_band_stack(path: Path) -> None:
    write_raster(path, np.ones((2, 64, 64), "uint16"))


MISTAKES = [
    # YAML and spec
    Mistake("yaml-invalid", _raw("inputs: [unclosed\n"), "not valid YAML"),
    Mistake("yaml-not-a-mapping", _raw("- a list\n"), "must be a YAML mapping"),
    Mistake("yaml-empty", _raw(""), "must be a YAML mapping"),
    Mistake("yaml-not-utf8", _raw("name: café\n".encode("latin-1")), "is not UTF-8 text (byte 9 of it): save"),
    Mistake("yaml-alias-bomb", _raw(_alias_bomb()), "inputs: Input should be a valid dictionary"),
    Mistake("unknown-key", _set("modles", []), "modles: unknown key"),
    Mistake("bands-and-files", _set("inputs.files", ["red.tif"]), "give exactly one of inputs.bands"),
    Mistake("tile-size-not-a-number", _set("tiling.tile_size", "big"), "tiling.tile_size"),
    Mistake("tile-size-too-small", _set("tiling.tile_size", 8), "tiling.tile_size"),
    Mistake("halo-below-the-model", _set("models.0.smoothing_px", 8), "raise tiling.halo to at least 8"),
    Mistake("duplicate-model-names", _set("models", [{"type": "crop_health"}] * 2), "model names must be unique"),
    Mistake("unknown-model-type", _set("models.0.type", "maskrcnn"), "models.0"),
    Mistake("no-models", _set("models", []), "models"),
    Mistake("thresholds-descending", _set("models.0.thresholds", {"stressed": 0.1}), "must ascend"),
    Mistake("output-not-gpkg", _set("output.path", "out/tiny.shp"), "output.path must end in .gpkg"),
    # files
    Mistake("input-missing", _set("inputs.bands.red.path", "missing.tif"), "cannot open input raster"),
    Mistake("glob-matches-nothing", _set("inputs.bands.red.path", "tiles/*_B04.tif"), "no file matches"),
    Mistake("input-not-a-raster", _file("red.tif", lambda p: p.write_text("not a raster")), "cannot open input"),
    Mistake("input-without-crs", _nir_values(np.ones((64, 64), "uint16"), crs=None), "has no CRS"),
    # bands
    Mistake("band-index-beyond-the-file", _set("inputs.bands.nir.band", 3), "has 1 band(s)"),
    Mistake("band-the-model-needs-is-missing", _set("inputs.bands", {"red": {"path": "red.tif"}}), "'nir'"),
    Mistake(
        "more-band-names-than-bands",
        _file(
            "stack.tif",
            _two_band_stack,
            lambda s, f: s.update(inputs={"files": "stack.tif", "band_names": ["red", "nir", "swir"]}),
        ),
        "has 2 band(s)",
    ),
    # CRSs and extents
    Mistake("inputs-crs-unknown", _set("inputs.crs", "EPSG:999999"), "inputs.crs 'EPSG:999999' is not a known CRS"),
    Mistake(
        "bands-that-do-not-overlap",
        _nir_values(np.ones((64, 64), "uint16"), transform=utm_transform(10, ORIGIN[0] + 5000)),
        "does not overlap",
    ),
    Mistake(  # UTM numbers labelled as another CRS: the file lands far away
        "band-in-a-wrong-crs", _nir_values(np.ones((64, 64), "uint16"), crs="EPSG:3035"), "does not overlap"
    ),
    # pixels
    Mistake("all-nodata", _nir_values(np.zeros((64, 64), "uint16"), nodata=0), "holds no valid pixel"),
    Mistake("all-nan", _nir_values(_full(np.nan)), "holds no valid pixel"),
    Mistake("all-inf", _nir_values(_full(np.inf)), "holds no valid pixel"),
    Mistake("valid-areas-never-meet", _disjoint_valid_areas, "never hold valid pixels"),
    Mistake("scale-not-a-number", _set("inputs.scale", "0.0001x"), "inputs.scale"),
    Mistake("scale-gives-impossible-reflectance", _set("inputs.scale", 0.1), "which cannot be: fix inputs.scale"),
    # AOI
    Mistake(
        "aoi-unknown-crs",
        _set("aoi", {"wkt": "POLYGON ((0 0, 1 0, 1 1, 0 0))", "crs": "EPSG:999999"}),
        "aoi.crs 'EPSG:999999'",
    ),
    Mistake("aoi-outside-the-inputs", _set("aoi", {"wkt": "POLYGON ((0 0, 1 0, 1 1, 0 0))"}), "AOI does not overlap"),
    Mistake("aoi-invalid-wkt", _set("aoi", {"wkt": "POLYGON ((0 0, 1"}), "aoi.wkt is not valid WKT"),
    Mistake("aoi-file-missing", _set("aoi", {"path": "fields.gpkg"}), "cannot read aoi.path"),
    Mistake(
        "aoi-touches-at-a-corner",
        _set("aoi", _utm_aoi("POLYGON ((-100 0, 0 0, 0 100, -100 100, -100 0))")),
        "the AOI only touches the inputs",
    ),
    Mistake("aoi-a-point", _set("aoi", _utm_aoi("POINT (100 -100)")), "aoi.wkt has no area"),
    Mistake("aoi-path-and-wkt", _set("aoi", {"path": "a.gpkg", "wkt": "POINT (0 0)"}), "exactly one of aoi.path"),
    # models and checkpoints
    Mistake("sam-unknown-variant", _set("models", [{"type": "sam", "variant": "vit_x"}]), "unknown SAM variant"),
    Mistake(
        "sam-checkpoint-missing",
        _set("models", [{"type": "sam", "rgb": ["nir", "red", "red"], "checkpoint": "sam.pth"}]),
        "fix `checkpoint:`",
    ),
    Mistake("sam-prompted-without-prompts", _set("models", [{"type": "sam", "mode": "prompted"}]), "needs `prompts:`"),
    Mistake(
        "unet-checkpoint-missing",
        _both(_set("models", [{"type": "unet", "checkpoint": "unet.pt"}]), _set("tiling.halo", 16)),
        "unet.json not found",
    ),
    # outputs
    Mistake(
        "output-folder-is-a-file",
        _file("blocker", lambda p: p.write_text("x"), _set("output.path", "blocker/tiny.gpkg")),
        "cannot create output folder",
    ),
    Mistake("output-crs-unknown", _set("output.crs", "EPSG:999999"), "output.crs 'EPSG:999999' is not a known CRS"),
    # compute
    Mistake("compute-actors-zero", _set("compute.actors", 0), "compute.actors"),
    Mistake("batch-size-negative", _set("compute.batch_size", -1), "compute.batch_size"),
]


def _snapshot(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its modification time (ns)."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def _write_job(folder: Path, spec: dict[str, Any]) -> Path:
    path = folder / "job.yaml"
    raw = spec["__raw__"] if "__raw__" in spec else yaml.safe_dump(spec)
    path.write_bytes(raw if isinstance(raw, bytes) else raw.encode())
    return path


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    _, err = capsys.readouterr()
    return code, err


def _assert_one_line(err: str, says: str) -> None:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("geoseg: error: "), err
    assert says in lines[0], err
    assert len(lines[0]) < 800, f"an error line of {len(lines[0])} characters"


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.id for m in MISTAKES])
def test_mistake_is_one_line_and_leaves_nothing(tmp_path, capsys, mistake):
    _bands(tmp_path)
    spec = _valid_job(tmp_path)
    mistake.edit(spec, tmp_path)
    job = _write_job(tmp_path, spec)
    before = _snapshot(tmp_path)
    code, err = _run_cli(["run", str(job), "--no-progress"], capsys)
    assert code == mistake.exit_code, err
    _assert_one_line(err, mistake.says)
    assert _snapshot(tmp_path) == before


def test_the_matrix_has_at_least_25_distinct_mistakes():
    assert len({m.id for m in MISTAKES}) == len(MISTAKES) >= 25


def test_missing_job_file(tmp_path, capsys):
    code, err = _run_cli(["run", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2
    _assert_one_line(err, "cannot read job spec")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------- past planning (Ray)
def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "out").iterdir()) if p.is_file()}


def test_too_many_actors_leaves_no_work_dir(tmp_path, capsys, ray_local):
    """Refused once Ray is up (it depends on the cluster): the fresh work dir is removed again."""
    _bands(tmp_path)
    spec = _valid_job(tmp_path)
    spec["compute"]["actors"] = 2  # the module's Ray has 2 CPUs
    spec["models"] = [{"type": "field_regions"}]  # model actors (crop_health alone runs in tile workers instead)
    job = _write_job(tmp_path, spec)
    before = _snapshot(tmp_path)
    code, err = _run_cli(["run", str(job), "--no-progress"], capsys)
    assert code == 2
    _assert_one_line(err, "set compute.actors below 2")
    assert _snapshot(tmp_path) == before


def _enospc(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["mask COG", "GeoPackage"])
def test_full_disk_while_writing_keeps_the_previous_output(tmp_path, capsys, monkeypatch, ray_local, where):
    """A disk that fills up while an output is written: one line, exit 1, no temp files, the old outputs intact.

    The disk is simulated (the writer raises ENOSPC part-way): a real full disk cannot be had in a test.
    """
    _bands(tmp_path)
    job = _write_job(tmp_path, _valid_job(tmp_path))
    code, err = _run_cli(["run", str(job), "--no-progress"], capsys)
    assert code == 0, err
    previous = _outputs(tmp_path)
    assert {"tiny.gpkg", "tiny_crop_health.tif"} <= set(previous)

    if where == "mask COG":  # the first window goes to the temp file, the second finds the disk full
        from geoseg.export.cog import CogWriter

        original, calls = CogWriter.write, []

        def write_then_fill_up(self: CogWriter, array: np.ndarray, window: Any) -> None:
            calls.append(window)
            if len(calls) > 1:
                _enospc()
            original(self, array, window)

        monkeypatch.setattr(CogWriter, "write", write_then_fill_up)
    else:  # the layers are in the temp GeoPackage; the job table finds the disk full
        monkeypatch.setattr("geoseg.export.vector._write_table", _enospc)
    code, err = _run_cli(["run", str(job), "--no-progress", "--overwrite"], capsys)
    assert code == 1
    _assert_one_line(err, "No space left on device; free space there")
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    assert _outputs(tmp_path) == previous


def test_a_stale_ray_address_file_is_never_joined(tmp_path):
    """A `ray start` cluster that died leaves its address file: an embedded run still starts its own Ray.

    Ray's temp dir is pointed at a private folder (a short path: Ray's socket paths are length-limited), so the
    stale file affects this run only.
    """
    _bands(tmp_path)
    spec = _valid_job(tmp_path)
    spec["compute"] |= {"num_cpus": 2, "object_store_mb": 128}
    job = _write_job(tmp_path, spec)
    ray_tmp = Path(tempfile.mkdtemp(prefix="gsray", dir="/tmp"))
    try:
        (ray_tmp / "ray").mkdir()
        (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:1\n")  # nobody listens there
        env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        run = subprocess.run(
            [sys.executable, "-m", "geoseg.cli", "run", str(job), "--no-progress"],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert (tmp_path / "out" / "tiny.gpkg").exists()


def test_resume_after_an_input_changed_is_refused(tmp_path, capsys, ray_local):
    _bands(tmp_path)
    job = _write_job(tmp_path, _valid_job(tmp_path))
    code, err = _run_cli(["run", str(job), "--no-progress"], capsys)
    assert code == 0, err
    write_raster(tmp_path / "nir.tif", np.full((64, 64), 2500, "uint16"), nodata=0)  # same path, new pixels
    before = _snapshot(tmp_path)
    code, err = _run_cli(["run", str(job), "--no-progress", "--resume", "--overwrite"], capsys)
    assert code == 2
    _assert_one_line(err, f"input {tmp_path / 'nir.tif'} (mtime_ns, head) changed since; run without --resume")
    assert _snapshot(tmp_path) == before


def _classes(folder: Path) -> np.ndarray:
    with rasterio.open(folder / "out" / "tiny_crop_health.tif") as src:
        return src.read(1)


def test_resume_never_takes_another_jobs_tiles(tmp_path, capsys, ray_local):
    """Job A's actors still writing tiles after job B claimed the work dir (B's manifest, A's tiles), then
    ``B --resume``: every tile is redone for B, and B's outputs are those of a fresh B run."""
    _bands(tmp_path)
    spec_a = _valid_job(tmp_path)
    spec_b = _valid_job(tmp_path)
    spec_b["models"][0]["thresholds"] = {"non_vegetation": 0.6, "stressed": 0.7, "moderate": 0.8}
    job_a, job_b = _write_job(tmp_path, spec_a), tmp_path / "b.yaml"
    job_b.write_text(yaml.safe_dump(spec_b))
    assert _run_cli(["run", str(job_b), "--no-progress"], capsys)[0] == 0
    fresh_b = _classes(tmp_path)
    assert _run_cli(["run", str(job_a), "--no-progress", "--overwrite"], capsys)[0] == 0
    assert not np.array_equal(_classes(tmp_path), fresh_b)  # the two jobs do differ

    work = tmp_path / "out" / "tiny.work"
    a_tiles = {p.name: p.read_bytes() for p in (work / "tiles").iterdir()}
    assert a_tiles
    spec = load_spec(job_b)  # what B's start writes: its manifest, an empty tiles/ ...
    workdir.prepare(work, spec, False, input_files(plan_job(spec)), [])
    for name, data in a_tiles.items():  # ... and A's actors, still running, save their tiles after it
        (work / "tiles" / name).write_bytes(data)
    code, err = _run_cli(["run", str(job_b), "--no-progress", "--resume", "--overwrite"], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(_classes(tmp_path), fresh_b)


def test_inputs_in_the_work_dir_are_never_deleted(tmp_path, capsys):
    """README's glob layout (``tiles/*_B03.tif``) with ``output.work_dir: .``: refused, the inputs intact."""
    _bands(tmp_path)
    (tmp_path / "tiles").mkdir()
    spec = _valid_job(tmp_path)
    for band in ("red", "nir"):
        (tmp_path / f"{band}.tif").rename(tmp_path / "tiles" / f"x_{band}.tif")
        spec["inputs"]["bands"][band] = {"path": f"tiles/*_{band}.tif"}
    spec["output"]["work_dir"] = "."
    job = _write_job(tmp_path, spec)
    before = _snapshot(tmp_path)
    code, err = _run_cli(["run", str(job), "--no-progress", "--overwrite"], capsys)
    assert code == 2
    _assert_one_line(err, "is not a geoseg work dir (no manifest.json, but job.yaml)")
    assert _snapshot(tmp_path) == before


@pytest.fixture
def small_disk(tmp_path):
    """A real 6 MiB file system (tmpfs) for the test's job; skipped where the test may not mount one (not root)."""
    mount = tmp_path / "fs"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("share", [0.1, 0.5, 0.9])
def test_a_real_full_disk_keeps_the_previous_output_set(small_disk, capsys, monkeypatch, ray_local, share):
    """The disk fills up while the new outputs are written (``share``: what is free of the space the previous
    outputs take): one line, exit 1, every previous output as it was, no temp file left."""
    monkeypatch.setenv("CPL_LOG", os.devnull)  # what the CLI sets: GDAL's own error lines off stderr
    _bands(small_disk, 256, 256)
    spec = _valid_job(small_disk)
    spec["tiling"]["tile_size"] = 64
    job = _write_job(small_disk, spec)
    code, err = _run_cli(["run", str(job), "--no-progress"], capsys)
    assert code == 0, err
    previous = _outputs(small_disk)
    size = sum(len(data) for data in previous.values())
    free = shutil.disk_usage(small_disk).free
    (small_disk / "filler").write_bytes(b"\0" * max(0, free - int(share * size)))
    code, err = _run_cli(["run", str(job), "--no-progress", "--overwrite"], capsys)
    assert code == 1, err
    _assert_one_line(err, "No space left on device")
    assert _outputs(small_disk) == previous
    assert not [p for p in small_disk.rglob("*") if ".tmp" in p.name]


def test_resume_redoes_a_torn_tile_and_a_torn_manifest(tmp_path, capsys, ray_local):
    """What a power cut leaves in the work dir (a truncated tile, an emptied one, a torn manifest.json): --resume
    redoes those tiles, exit 0, the same outputs as the first run; no BadZipFile / JSONDecodeError traceback."""
    _bands(tmp_path)
    job = _write_job(tmp_path, _valid_job(tmp_path))
    assert _run_cli(["run", str(job), "--no-progress"], capsys)[0] == 0
    first = _classes(tmp_path)
    work = tmp_path / "out" / "tiny.work"
    tiles = sorted((work / "tiles").iterdir())
    tiles[0].write_bytes(tiles[0].read_bytes()[:100])
    tiles[1].write_bytes(b"")
    (work / "manifest.json").write_text('{"job": "tiny", "fing')
    code, err = _run_cli(["run", str(job), "--no-progress", "--resume", "--overwrite"], capsys)
    assert code == 0, err
    assert "Traceback" not in err
    np.testing.assert_array_equal(_classes(tmp_path), first)
    index = gpd.read_file(tmp_path / "out" / "tiny.gpkg", layer="tiles").set_index("tile_id")
    assert (index.loc[[tiles[0].stem, tiles[1].stem], "status"] == "done").all()
    assert (index.drop([tiles[0].stem, tiles[1].stem])["status"] == "resumed").all()
