"""``geoseg run`` from the command line: Ray starts while the rest of geoseg imports.

Starting an embedded Ray takes seconds of waiting on its processes; importing the pipeline (pandas, geopandas,
scipy, rasterio, the models) takes about a second of CPU. Neither needs the other, so Ray starts in the main
thread (Ray's signal handling wants it) while a second thread imports :mod:`geoseg.pipeline`. This module itself
imports only what the spec needs.
"""

from __future__ import annotations

import importlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from geoseg.atomic import check_output_absent
from geoseg.run.session import start_ray, stop_ray
from geoseg.spec.job import JobSpec
from geoseg.spec.search import bearer_headers

if TYPE_CHECKING:
    from geoseg.pipeline import RunResult
    from geoseg.run.progress import ProgressMode


def launch_job(
    spec: JobSpec,
    *,
    overwrite: bool,
    resume: bool,
    address: str | None,
    progress: bool | ProgressMode,
) -> RunResult:
    """:func:`geoseg.pipeline.run_job`, with Ray started while the pipeline's modules import.

    The commonest mistake (the GeoPackage exists, no ``--overwrite``) is caught before Ray starts; the run checks
    every output again. Ray is shut down whether or not the run gets as far as its Ray session.
    """
    check_output_absent(Path(spec.output.path), overwrite)
    if spec.inputs.stac_search is not None:
        bearer_headers(spec.inputs.stac_search)  # GDAL's header in the environment before Ray's workers start
    pool = ThreadPoolExecutor(1, thread_name_prefix="import")
    runner = pool.submit(importlib.import_module, "geoseg.pipeline")
    pool.shutdown(wait=False)  # the import goes on; an error in it is raised by result()
    started = start_ray(address or spec.compute.address, spec)
    try:
        return runner.result().run_job(
            spec, overwrite=overwrite, resume=resume, address=address, progress=progress, started=started
        )
    except BaseException:
        stop_ray(started)
        raise
