"""The QGIS plugin (``qgis/geoseg_qgis/``) as the zip that QGIS's "Install from ZIP" takes: its folder at the root.

The plugin never imports geoseg: it runs the ``geoseg`` command of the environment the user points it to. Its
sources come from the source tree beside this package (a checkout, ``pip install -e .``) or, in an installed wheel,
from the top-level package ``geoseg_qgis`` that setuptools installs with geoseg.
"""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

from geoseg.atomic import atomic_output
from geoseg.errors import InputError

PLUGIN_NAME = "geoseg_qgis"
"""The plugin's folder name: QGIS's plugin id, the folder at the zip's root."""
_LEFT_OUT = {"__pycache__", ".mypy_cache", ".pytest_cache"}
_EPOCH = (1980, 1, 1, 0, 0, 0)
"""Every entry's timestamp, so the same sources give the same zip."""


def plugin_source() -> Path:
    """The plugin's folder: ``qgis/geoseg_qgis`` of the source tree, else the installed ``geoseg_qgis`` package.

    Raises:
        InputError: neither is there (an install made without the plugin's sources).
    """
    tree = Path(__file__).resolve().parent.parent / "qgis" / PLUGIN_NAME
    if (tree / "metadata.txt").is_file():
        return tree
    spec = importlib.util.find_spec(PLUGIN_NAME)  # finds the package without importing it (it needs QGIS)
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / "metadata.txt").is_file():
            return Path(location)
    raise InputError(
        f"the QGIS plugin's sources ({PLUGIN_NAME}) are not in this geoseg install: reinstall geoseg "
        "(pip install --force-reinstall geoseg) or run from a source checkout (pip install -e .)"
    )


def plugin_files(source: Path) -> list[Path]:
    """The plugin's files to ship, sorted: everything but caches and compiled Python."""
    return sorted(
        p
        for p in source.rglob("*")
        if p.is_file() and not _LEFT_OUT & set(p.relative_to(source).parts) and p.suffix not in (".pyc", ".pyo")
    )


def build_plugin_zip(out: str | Path, overwrite: bool = False, source: Path | None = None) -> Path:
    """Write the plugin zip: ``geoseg_qgis/metadata.txt``, ``geoseg_qgis/__init__.py``, ... (written atomically).

    Args:
        out: The zip to write.
        overwrite: Replace an existing ``out``.
        source: The plugin folder (default: :func:`plugin_source`).

    Returns:
        The zip's path.

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
        InputError: the plugin's sources are not found.
    """
    source = source or plugin_source()
    out = Path(out)
    with atomic_output(out, overwrite) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in plugin_files(source):
            name = f"{PLUGIN_NAME}/{path.relative_to(source).as_posix()}"
            entry = zipfile.ZipInfo(name, _EPOCH)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, path.read_bytes())
    return out
