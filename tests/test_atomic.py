"""Tests of atomic writes: outputs (never clobbered without overwrite) and geoseg's own files."""

from __future__ import annotations

from pathlib import Path

import pytest

from geoseg.atomic import atomic_output, atomic_write
from geoseg.errors import OutputExistsError


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_atomic_output_renames_temp_onto_final(tmp_path: Path) -> None:
    final = tmp_path / "sub" / "out.gpkg"
    with atomic_output(final) as tmp:
        assert tmp.parent == final.parent
        assert tmp.name.startswith(".out.gpkg.tmp-") and tmp.suffix == ".gpkg"
        assert not tmp.exists()
        tmp.write_text("new")
    assert final.read_text() == "new"
    assert _names(final.parent) == {"out.gpkg"}


def test_atomic_output_keeps_existing_without_overwrite(tmp_path: Path) -> None:
    final = tmp_path / "out.gpkg"
    final.write_text("old")
    with pytest.raises(OutputExistsError, match="--overwrite"), atomic_output(final):
        pytest.fail("the block must not run")
    assert final.read_text() == "old"
    with atomic_output(final, overwrite=True) as tmp:
        tmp.write_text("new")
    assert final.read_text() == "new"
    assert _names(tmp_path) == {"out.gpkg"}


def test_atomic_output_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    final = tmp_path / "out.gpkg"
    final.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_output(final, overwrite=True) as tmp:
        tmp.write_text("half")
        Path(f"{tmp}-journal").write_text("sidecar")
        raise RuntimeError("boom")
    assert final.read_text() == "old"
    assert _names(tmp_path) == {"out.gpkg"}


def test_atomic_output_refuses_output_that_appeared_meanwhile(tmp_path: Path) -> None:
    final = tmp_path / "out.gpkg"
    with pytest.raises(OutputExistsError), atomic_output(final) as tmp:
        tmp.write_text("mine")
        final.write_text("theirs")
    assert final.read_text() == "theirs"
    assert _names(tmp_path) == {"out.gpkg"}


def test_atomic_write_replaces_and_cleans_up(tmp_path: Path) -> None:
    final = tmp_path / "tile.npz"
    final.write_text("old")
    atomic_write(final, lambda tmp: tmp.write_text("new"))
    assert final.read_text() == "new" and _names(tmp_path) == {"tile.npz"}

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_write(final, fail)
    assert final.read_text() == "new" and _names(tmp_path) == {"tile.npz"}
