"""Run real GIS clients (GDAL's ogrinfo, QGIS's processing runner) on geoseg outputs, for tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

OGRINFO = shutil.which("ogrinfo")
QGIS_PROCESS = shutil.which("qgis_process.bin")
"""The QGIS 3.22 runner; the ``qgis_process`` wrapper adds an option this version rejects."""


def ogrinfo_summary(path: Path) -> subprocess.CompletedProcess[str]:
    """``ogrinfo -ro -al -so``: every layer's summary (stderr holds GDAL's warnings)."""
    return subprocess.run([str(OGRINFO), "-ro", "-al", "-so", str(path)], capture_output=True, text=True, timeout=120)


def qgis_env(folder: Path | None = None) -> dict[str, str]:
    """Environment for a headless QGIS: offscreen Qt and a private 0700 runtime dir."""
    runtime = Path(folder or tempfile.mkdtemp()) / "xdg"
    runtime.mkdir(mode=0o700, exist_ok=True)
    return {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(runtime)}


def qgis_check_validity(gpkg: Path, layer: str, folder: Path | None = None) -> dict[str, Any]:
    """Run ``qgis:checkvalidity`` (GEOS method) on one layer; returns QGIS's result counts."""
    args = [str(QGIS_PROCESS), "--json", "run", "qgis:checkvalidity", "--", f"INPUT_LAYER={gpkg}|layername={layer}"]
    args += ["METHOD=2"] + [f"{k}=TEMPORARY_OUTPUT" for k in ("VALID_OUTPUT", "INVALID_OUTPUT", "ERROR_OUTPUT")]
    proc = subprocess.run(args, capture_output=True, text=True, env=qgis_env(folder), timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"qgis_process failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout)["results"]
