"""The figures of README's Landsat paragraph: the cloudy Landsat 8 job with and without its BQA cloud mask.

    python benchmarks/landsat_clouds.py

Runs ``jobs/landsat_fields.yaml`` twice into a temp folder (as it is, then with ``inputs.mask`` removed) and prints,
for each run, the fields drawn, the share of the pixels inside them that the BQA marks high-confidence cloud (bits
14-15 = 3), the same inside stressed zones, the fields ``not_observed``, and the wall and CPU seconds.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import yaml
from rasterio.features import geometry_mask

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from geoseg.pipeline import run_job  # noqa: E402
from geoseg.spec.job import load_spec  # noqa: E402


def _cloud_share(polygons: gpd.GeoSeries) -> float:
    with rasterio.open(REPO / "jobs/landsat/BQA.tif") as src:
        high = ((src.read(1).astype(np.uint32) >> 14) & 3) == 3
        inside = geometry_mask(list(polygons), high.shape, src.transform, invert=True) if len(polygons) else None
    return float(high[inside].mean()) if inside is not None and inside.any() else 0.0


def _run(folder: Path, masked: bool) -> str:
    raw = yaml.safe_load((REPO / "jobs/landsat_fields.yaml").read_text())
    raw["output"] |= {"path": str(folder / "landsat.gpkg"), "formats": [], "quicklook": False}
    for band in raw["inputs"]["bands"].values():
        band["path"] = str(REPO / "jobs" / band["path"])
    if masked:
        raw["inputs"]["mask"]["path"] = str(REPO / "jobs" / raw["inputs"]["mask"]["path"])
    else:
        del raw["inputs"]["mask"]
    (folder / "job.yaml").write_text(yaml.safe_dump(raw))
    wall, cpu = time.perf_counter(), time.process_time()
    run_job(load_spec(folder / "job.yaml"), progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    fields = gpd.read_file(folder / "landsat.gpkg", layer="fields")
    zones = gpd.read_file(folder / "landsat.gpkg", layer="crop_health")
    stressed = zones[zones["class_name"] == "stressed"].geometry
    hidden = int((fields["verdict"] == "not_observed").sum())
    return (
        f"{'with' if masked else 'without'} the mask: {len(fields)} fields, high-confidence cloud inside them "
        f"{100 * _cloud_share(fields.geometry):.2f} %, inside stressed zones {100 * _cloud_share(stressed):.2f} %, "
        f"not_observed {hidden}; wall {wall:.1f} s, driver CPU {cpu:.1f} s"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for masked in (True, False):
            folder = Path(tmp) / ("masked" if masked else "unmasked")
            folder.mkdir()
            print(_run(folder, masked), flush=True)


if __name__ == "__main__":
    main()
