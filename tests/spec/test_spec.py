"""Tests of geoseg.spec.job: loading, normalising and rejecting job specs."""

from __future__ import annotations

import copy
import glob
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from geoseg.errors import SpecError
from geoseg.plan.job import model_infos
from geoseg.spec.job import CropHealthSpec, FieldRegionsSpec, SamSpec, expand_paths, json_schema, load_spec, parse_spec

REPO = Path(__file__).resolve().parents[2]


def _rejected(raw: Any, base: Path = Path("/data/jobs")) -> str:
    """The SpecError message for a raw spec, checked to be one line."""
    with pytest.raises(SpecError) as info:
        parse_spec(raw, base, "job.yaml")
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith("job.yaml: "), message
    return message


# --------------------------------------------------------------------------------------------- good specs
def test_minimal_spec_gets_defaults(minimal_spec, write_spec):
    spec = load_spec(write_spec(minimal_spec))
    assert spec.name == "job"
    assert spec.tiling.tile_size == 512 and spec.tiling.halo == 32
    assert spec.inputs.resampling == "bilinear" and spec.inputs.scale == 1.0
    (model,) = spec.models
    assert isinstance(model, CropHealthSpec)
    assert model.thresholds.non_vegetation < model.thresholds.stressed < model.thresholds.moderate
    assert spec.compute.actors == 1


def test_band_map_paths_resolve_against_the_spec_folder(minimal_spec, write_spec, tmp_path):
    minimal_spec["inputs"]["bands"]["nir"] = {"path": ["../tiles/a.tif", "tiles/b*.tif"], "band": 4}
    spec = load_spec(write_spec(minimal_spec, "jobs/job.yaml"))
    jobs = tmp_path / "jobs"
    assert spec.inputs.bands is not None
    assert spec.inputs.bands["red"].path == str(jobs / "red.tif")
    assert spec.inputs.bands["red"].band == 1
    assert spec.inputs.bands["nir"].path == [str(tmp_path / "tiles/a.tif"), str(jobs / "tiles/b*.tif")]
    assert spec.inputs.bands["nir"].band == 4
    assert spec.output.path == str(jobs / "out/result.gpkg")


def test_paths_resolve_the_same_from_any_working_directory(minimal_spec, write_spec, tmp_path, monkeypatch):
    path = write_spec(minimal_spec, "jobs/job.yaml")
    first = load_spec(path)
    monkeypatch.chdir(tmp_path / "jobs")
    assert load_spec("job.yaml") == first


def test_files_form_with_band_names(minimal_spec, write_spec, tmp_path):
    minimal_spec["inputs"] = {"files": "scenes/*.tif", "band_names": ["blue", "green", "red", "nir"], "nodata": 0}
    spec = load_spec(write_spec(minimal_spec))
    assert spec.inputs.files == [str(tmp_path / "scenes/*.tif")]  # one string becomes a list
    assert spec.inputs.band_names == ["blue", "green", "red", "nir"]
    assert spec.inputs.bands is None and spec.inputs.nodata == 0


def test_other_paths_resolve_and_remote_paths_are_kept(minimal_spec, write_spec, tmp_path):
    minimal_spec["inputs"]["bands"]["red"]["path"] = "s3://bucket/red.tif"
    minimal_spec["inputs"]["bands"]["nir"]["path"] = "/vsicurl/https://example.com/nir.tif"
    minimal_spec["aoi"] = {"path": "aoi.geojson"}
    minimal_spec["output"]["work_dir"] = "scratch"
    minimal_spec["models"] = [{"type": "sam", "mode": "prompted", "prompts": "pts.gpkg", "checkpoint": "sam.pth"}]
    spec = load_spec(write_spec(minimal_spec))
    assert spec.inputs.bands is not None
    assert spec.inputs.bands["red"].path == "s3://bucket/red.tif"
    assert spec.inputs.bands["nir"].path == "/vsicurl/https://example.com/nir.tif"
    assert spec.aoi is not None and spec.aoi.path == str(tmp_path / "aoi.geojson")
    assert spec.output.work_dir == str(tmp_path / "scratch")
    (sam,) = spec.models
    assert isinstance(sam, SamSpec)
    assert sam.prompts == str(tmp_path / "pts.gpkg") and sam.checkpoint == str(tmp_path / "sam.pth")


def test_home_is_expanded(minimal_spec, write_spec, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    minimal_spec["inputs"]["bands"]["red"]["path"] = "~/red.tif"
    spec = load_spec(write_spec(minimal_spec))
    assert spec.inputs.bands is not None
    assert spec.inputs.bands["red"].path == str(tmp_path / "home/red.tif")


def test_expand_paths_globs_sorted_without_duplicates(tmp_path):
    for name in ("b.tif", "a.tif", "c.txt"):
        (tmp_path / name).touch()
    pattern = str(tmp_path / "*.tif")
    assert expand_paths(pattern) == [str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]
    assert expand_paths([str(tmp_path / "b.tif"), pattern]) == [str(tmp_path / "b.tif"), str(tmp_path / "a.tif")]
    assert expand_paths(str(tmp_path / "missing.tif")) == [str(tmp_path / "missing.tif")]  # no glob: kept


def test_a_literal_path_that_exists_is_never_a_glob(tmp_path):
    """``S2 [2024-06]/B02.tif`` exists: read as it is (as a glob, ``[2024-06]`` is one character: no match)."""
    folder = tmp_path / "S2 [2024-06]"
    folder.mkdir()
    (folder / "B02.tif").write_bytes(b"x")
    assert expand_paths(str(folder / "B02.tif")) == [str(folder / "B02.tif")]
    with pytest.raises(SpecError, match="no file matches"):  # a path that does not exist is still a pattern
        expand_paths(str(folder / "B0?.tif"))
    assert expand_paths(glob.escape(str(folder)) + "/B0?.tif") == [str(folder / "B02.tif")]


def test_expand_paths_glob_matching_nothing_names_the_pattern(tmp_path):
    pattern = str(tmp_path / "*.jp2")
    with pytest.raises(SpecError, match=r"no file matches .*\*\.jp2"):
        expand_paths(pattern)


def test_halo_equal_to_receptive_field_is_enough(minimal_spec):
    minimal_spec["tiling"] = {"halo": 4}
    minimal_spec["models"] = [
        {"type": "crop_health", "smoothing_px": 4},
        {"type": "field_regions", "erode_px": 2},
    ]
    spec = parse_spec(minimal_spec)
    assert [type(m) for m in spec.models] == [CropHealthSpec, FieldRegionsSpec]


_NO_LONG_FILTER = {"type": "field_delineator", "long_edge_length_m": 0}  # reaches 32 px


@pytest.mark.parametrize(
    ("tiling", "models", "halo"),
    [
        (None, [{"type": "field_delineator"}], 50),  # the delineator's long line filter reaches 50 px
        ({"tile_size": 256}, [{"type": "crop_health"}, {"type": "field_delineator"}], 50),  # the farthest model
        ({"tile_size": 256}, [{"type": "crop_health", "smoothing_px": 16}, _NO_LONG_FILTER], 32),  # the default
        ({"halo": 64}, [{"type": "field_delineator"}], 64),  # a halo given is kept
    ],
)
def test_halo_left_out_follows_the_models(minimal_spec, tiling, models, halo):
    minimal_spec.pop("tiling", None)
    if tiling is not None:
        minimal_spec["tiling"] = tiling
    minimal_spec["models"] = models
    spec = parse_spec(minimal_spec)
    assert spec.tiling.halo == halo
    assert spec.tiling.tile_size == (tiling or {}).get("tile_size", 512)


def test_halo_given_too_small_for_the_delineator_is_refused(minimal_spec):
    minimal_spec["tiling"] = {"halo": 32}
    minimal_spec["models"] = [{"type": "field_delineator"}]
    assert "raise tiling.halo to at least 50" in _rejected(minimal_spec)


def test_spec_is_frozen(minimal_spec):
    spec = parse_spec(minimal_spec)
    with pytest.raises(ValueError):
        spec.tiling.halo = 1


def test_sample_job_validates():
    spec = load_spec(REPO / "jobs/sample_fields.yaml")
    assert spec.name == "sample-fields"
    assert [m.name for m in spec.models] == ["crop_health", "fields"]
    assert spec.inputs.bands is not None
    assert spec.inputs.bands["rededge"].path == str(REPO / "jobs/sample/B05.tif")
    assert spec.output.path == str(REPO / "out/sample_fields.gpkg")


# --------------------------------------------------------------------------------------------- bad specs
Mutation = Callable[[dict[str, Any]], object]


def _set_model(raw: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    raw["models"] = [model]
    return raw


def _sam_from(source: str) -> dict[str, Any]:
    return {"type": "sam", "mode": "prompted", "prompts_from": source}


BAD_SPECS: list[tuple[str, Mutation, tuple[str, ...]]] = [
    ("unknown top-level key", lambda r: r.update(colour="red"), ("colour", "unknown key")),
    ("unknown inputs key", lambda r: r["inputs"].update(nodta=0), ("inputs.nodta", "unknown key")),
    ("unknown band key", lambda r: r["inputs"]["bands"]["red"].update(bnd=2), ("inputs.bands.red.bnd",)),
    ("unknown model key", lambda r: r["models"][0].update(smoothing=2), ("models.0", "smoothing", "unknown key")),
    ("unknown sam key", lambda r: _set_model(r, {"type": "sam", "pointz": 8}), ("models.0", "pointz")),
    ("unknown tiling key", lambda r: r.update(tiling={"size": 256}), ("tiling.size", "unknown key")),
    ("wrong type int", lambda r: r.update(tiling={"tile_size": "big"}), ("tiling.tile_size", "integer")),
    ("wrong type float", lambda r: r["inputs"].update(scale="tiny"), ("inputs.scale", "number")),
    ("wrong type mapping", lambda r: r.update(output="out.gpkg"), ("output",)),
    ("out of range", lambda r: r.update(tiling={"tile_size": 8}), ("tiling.tile_size",)),
    ("band index 0", lambda r: r["inputs"]["bands"]["red"].update(band=0), ("inputs.bands.red.band",)),
    (
        "both input forms",
        lambda r: r["inputs"].update(files=["x.tif"], band_names=["red"]),
        ("inputs", "exactly one of inputs.bands"),
    ),
    ("neither input form", lambda r: r.update(inputs={"nodata": 0}), ("inputs", "exactly one of inputs.bands")),
    ("files without names", lambda r: r.update(inputs={"files": "x.tif"}), ("inputs.band_names",)),
    (
        "band_names with bands",
        lambda r: r["inputs"].update(band_names=["red"]),
        ("inputs.band_names goes with inputs.files",),
    ),
    (
        "thresholds not ascending",
        lambda r: r["models"][0].update(thresholds={"non_vegetation": 0.5, "stressed": 0.4, "moderate": 0.6}),
        ("thresholds", "must ascend"),
    ),
    (
        "equal thresholds",
        lambda r: r["models"][0].update(thresholds={"stressed": 0.65}),
        ("thresholds", "must ascend"),
    ),
    (
        "duplicate model names",
        lambda r: r["models"].append({"type": "field_regions", "name": "crop_health"}),
        ("model names must be unique", "crop_health"),
    ),
    (
        "halo below smoothing",
        lambda r: (r.update(tiling={"halo": 2}), r["models"][0].update(smoothing_px=3)),
        ("tiling.halo", "crop_health", "at least 3"),
    ),
    (
        "halo below erosion",
        lambda r: (r.update(tiling={"halo": 3}), _set_model(r, {"type": "field_regions", "erode_px": 2})),
        ("tiling.halo", "fields", "at least 4"),
    ),
    ("output not gpkg", lambda r: r["output"].update(path="out.shp"), ("output.path", ".gpkg")),
    (
        "sam prompted without prompts",
        lambda r: _set_model(r, {"type": "sam", "mode": "prompted"}),
        ("models.0", "prompts"),
    ),
    (
        "sam prompts_from an unknown model",
        lambda r: _set_model(r, _sam_from("feilds")),
        ("prompts_from 'feilds' is not another model", "use one of"),
    ),
    (
        "sam prompts_from a semantic model",
        lambda r: r.update(models=[{"type": "crop_health", "name": "health"}, _sam_from("health")]),
        ("prompts_from 'health' must be an instance model",),
    ),
    (
        "sam prompts and prompts_from",
        lambda r: r.update(models=[{"type": "field_delineator"}, {**_sam_from("fields"), "prompts": "p.gpkg"}]),
        ("not both",),
    ),
    (
        "sam percentiles",
        lambda r: _set_model(r, {"type": "sam", "stretch_percentiles": [98, 2]}),
        ("stretch_percentiles",),
    ),
    ("unknown model type", lambda r: _set_model(r, {"type": "unet"}), ("models.0", "unet")),
    ("unknown index", lambda r: r["models"][0].update(classify_by="ndwi"), ("classify_by",)),
    ("no models", lambda r: r.update(models=[]), ("models",)),
    ("missing output", lambda r: r.pop("output"), ("output", "required")),
    ("aoi both forms", lambda r: r.update(aoi={"path": "a.gpkg", "wkt": "POINT (0 0)"}), ("aoi",)),
    ("bad extra format", lambda r: r["output"].update(formats=["shp"]), ("output.formats",)),
]


@pytest.mark.parametrize(("mutate", "expected"), [b[1:] for b in BAD_SPECS], ids=[b[0] for b in BAD_SPECS])
def test_bad_spec_names_the_key(minimal_spec, mutate, expected):
    raw = copy.deepcopy(minimal_spec)
    mutate(raw)
    message = _rejected(raw)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_several_errors_are_counted_on_one_line(minimal_spec):
    minimal_spec.update(colour="red", size=3)
    assert _rejected(minimal_spec).endswith("(+1 more)")


@pytest.mark.parametrize(
    ("text", "expected"), [("- a\n- b\n", "got list"), ("just words\n", "got str"), ("", "got NoneType")]
)
def test_non_mapping_yaml_is_rejected(write_spec, text, expected):
    path = write_spec(text)
    with pytest.raises(SpecError, match="must be a YAML mapping") as info:
        load_spec(path)
    assert expected in str(info.value) and str(path) in str(info.value)


def test_invalid_yaml_is_one_line_naming_the_file(write_spec):
    path = write_spec("inputs:\n  bands: {red: [unclosed\nmodels: []\n")
    with pytest.raises(SpecError, match="not valid YAML") as info:
        load_spec(path)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(str(path))


def test_missing_spec_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match="cannot read job spec") as info:
        load_spec(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_python_tags_are_rejected_not_executed(write_spec, tmp_path):
    """``yaml.safe_load``: a spec cannot run code (an unsafe loader would create the file)."""
    witness = tmp_path / "executed"
    path = write_spec(f"name: !!python/object/apply:builtins.open [{json.dumps(str(witness))}, w]\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)
    assert not witness.exists()


def test_parse_spec_rejects_non_mapping():
    with pytest.raises(SpecError, match="got NoneType"):
        parse_spec(None)


# --------------------------------------------------------------------------------------------- schema
def test_json_schema_is_json_with_the_sections():
    schema = json.loads(json_schema())
    assert {"name", "inputs", "aoi", "tiling", "models", "output", "compute"} <= set(schema["properties"])
    assert set(schema["required"]) == {"inputs", "models", "output"}
    assert schema["additionalProperties"] is False
    assert {"CropHealthSpec", "FieldRegionsSpec", "SamSpec", "InputSpec"} <= set(schema["$defs"])


def test_unknown_sam_variant_is_a_plan_error(minimal_spec):
    """Validating a spec reads no model table or file; planning names the known variants."""
    raw = copy.deepcopy(minimal_spec)
    _set_model(raw, {"type": "sam", "variant": "vit_x"})
    spec = parse_spec(raw)
    with pytest.raises(SpecError, match=r"unknown SAM variant 'vit_x'.*vit_b"):
        model_infos(spec)
