"""Tests of atomic writes: outputs (never clobbered without overwrite) and geoseg's own files."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from geoseg.atomic import as_disk_full, atomic_output, atomic_write, output_set, remove_stale_temps
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


def test_an_output_set_is_renamed_together_or_not_at_all(tmp_path: Path) -> None:
    """Outputs inside ``output_set`` wait for each other: one failing leaves every previous output as it was."""
    a, b = tmp_path / "a.gpkg", tmp_path / "a_fields.tif"
    a.write_text("old a")
    b.write_text("old b")
    with pytest.raises(OSError, match="No space left"), output_set():
        with atomic_output(a, overwrite=True) as tmp:
            tmp.write_text("new a")
        assert a.read_text() == "old a"  # not yet: the set is incomplete
        with atomic_output(b, overwrite=True) as tmp:
            tmp.write_text("new b")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert (a.read_text(), b.read_text()) == ("old a", "old b")
    assert _names(tmp_path) == {"a.gpkg", "a_fields.tif"}
    with output_set():
        for final in (a, b):
            with atomic_output(final, overwrite=True) as tmp:
                tmp.write_text(f"new {final.name}")
    assert (a.read_text(), b.read_text()) == ("new a.gpkg", "new a_fields.tif")
    assert _names(tmp_path) == {"a.gpkg", "a_fields.tif"}


def test_a_library_error_on_a_full_disk_reads_as_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite's "disk is full" and GDAL's failed commit become OSError(ENOSPC) (exit 1, one line) when the file
    system is (nearly) full; elsewhere they stay what they are."""
    assert as_disk_full(RuntimeError("Failed to commit transaction"), tmp_path) is None  # space enough here
    full = as_disk_full(sqlite3.OperationalError("database or disk is full"), tmp_path)
    assert full is not None and full.errno == errno.ENOSPC and str(tmp_path) in str(full)
    monkeypatch.setattr("geoseg.atomic.shutil.disk_usage", lambda path: shutil._ntuple_diskusage(10, 10, 4096))
    full = as_disk_full(RuntimeError("Failed to commit transaction"), tmp_path)
    assert full is not None and "(4 KiB free)" in str(full)
    assert as_disk_full(OutputExistsError("x exists"), tmp_path) is None


def test_temps_a_killed_run_left_are_removed(tmp_path: Path) -> None:
    final = tmp_path / "S2 [x].gpkg"
    stale = tmp_path / ".S2 [x].gpkg.tmp-1a2b3c4d.gpkg"
    other = tmp_path / ".notes.txt.tmp-1a2b3c4d.txt"  # not one of the job's outputs: kept
    for path in (stale, other):
        path.write_text("x")
    assert remove_stale_temps([final]) == [stale]
    assert _names(tmp_path) == {other.name}
