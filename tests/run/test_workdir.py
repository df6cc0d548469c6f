"""Per-tile checkpoints: round trip, atomic files, a work dir of another job refused on resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import shapely

from geoseg.errors import SpecError, WorkDirError
from geoseg.inputs.tiles import TileGrid
from geoseg.models.base import InstanceInfo, InstanceOutput
from geoseg.run import workdir
from geoseg.run.claim import claimed, foreign_entry
from geoseg.spec.job import parse_spec
from geoseg.stitch import spool as spool_module
from geoseg.stitch.spool import ObjectSpool
from geoseg.stitch.stitcher import StitchedObject, tile_layer


def _spec(tmp_path, threshold=0.5):
    return parse_spec(
        {
            "inputs": {"bands": {"red": {"path": "r.tif"}, "nir": {"path": "n.tif"}}},
            "models": [{"type": "field_regions", "threshold": threshold}],
            "output": {"path": "out.gpkg"},
        },
        base=tmp_path,
    )


def test_tile_round_trip(tmp_path):
    workdir.prepare(tmp_path / "w", _spec(tmp_path), resume=False)
    tile = TileGrid(20, 20, 10, 2)[0, 1]
    labels = np.zeros((14, 14), np.int32)
    labels[3:9, 3:12] = 4
    layer, core = tile_layer(InstanceOutput(labels, [InstanceInfo(4, 0.7, key="p1", attrs={"name": "x"})]), tile)
    layer.fragments[0].masked_pixels, layer.fragments[0].edge_sides, layer.fragments[0].edge_sides_masked = 5, 30, 7
    seconds = workdir.StageSeconds(read=0.1, model=0.2, finish=0.3)
    workdir.save_tile(tmp_path / "w", tile.id, {"fields": layer}, {"fields": core}, seconds)
    saved = workdir.load_tile(tmp_path / "w", tile.id)
    assert saved is not None
    back = saved.layers["fields"]
    assert saved.seconds == seconds
    kept = ("label", "pixels", "key", "attrs", "geometry", "masked_pixels", "edge_sides", "edge_sides_masked")
    assert [[getattr(f, k) for k in kept] for f in back.fragments] == [
        [getattr(f, k) for k in kept] for f in layer.fragments
    ]
    for side in ("top", "bottom", "left", "right"):
        np.testing.assert_array_equal(back.strips.inside[side], layer.strips.inside[side])
        np.testing.assert_array_equal(back.strips.outside[side], layer.strips.outside[side])
    np.testing.assert_array_equal(workdir.load_core(tmp_path / "w", tile.id, "fields"), core)
    assert [p.name for p in (tmp_path / "w" / "tiles").iterdir()] == [f"{tile.id}.npz"]  # no temp left
    assert workdir.load_tile(tmp_path / "w", "r0009_c0009") is None


def test_resume_refuses_a_work_dir_of_another_job(tmp_path):
    workdir.prepare(tmp_path / "w", _spec(tmp_path), resume=False)
    workdir.prepare(tmp_path / "w", _spec(tmp_path), resume=True)  # same job: fine
    with pytest.raises(SpecError, match="different job"):
        workdir.prepare(tmp_path / "w", _spec(tmp_path, threshold=0.6), resume=True)


def test_resume_refuses_changed_inputs_and_checkpoints(tmp_path):
    """Same spec, same paths, different bytes: the fingerprint names the file and what changed."""
    band, ckpt = tmp_path / "r.tif", tmp_path / "m.pt"
    band.write_bytes(b"A" * 5000)
    ckpt.write_bytes(b"weights-1")
    spec, work = _spec(tmp_path), tmp_path / "w"
    workdir.prepare(work, spec, resume=False, inputs=[str(band)], checkpoints=[ckpt])
    workdir.prepare(work, spec, resume=True, inputs=[str(band)], checkpoints=[ckpt])  # unchanged: fine

    stat = band.stat()
    band.write_bytes(b"B" + b"A" * 4999)  # same size; mtime restored: only the content hash can tell
    os.utime(band, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(SpecError, match=rf"input {band} \(head\) changed"):
        workdir.prepare(work, spec, resume=True, inputs=[str(band)], checkpoints=[ckpt])
    band.write_bytes(b"A" * 6000)
    with pytest.raises(SpecError, match=rf"input {band} \(size, mtime_ns, head\) changed"):
        workdir.prepare(work, spec, resume=True, inputs=[str(band)], checkpoints=[ckpt])

    band.write_bytes(b"A" * 5000)
    os.utime(band, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    workdir.prepare(work, spec, resume=True, inputs=[str(band)], checkpoints=[ckpt])  # restored: fine again
    ckpt.write_bytes(b"weights-2")
    with pytest.raises(SpecError, match=rf"checkpoint {ckpt} \(content\) changed"):
        workdir.prepare(work, spec, resume=True, inputs=[str(band)], checkpoints=[ckpt])
    (tmp_path / "other.tif").write_bytes(b"C")
    with pytest.raises(SpecError, match=r"input .*other.tif \(new\)"):
        workdir.prepare(work, spec, resume=True, inputs=[str(band), str(tmp_path / "other.tif")])


def test_fresh_run_discards_old_tiles(tmp_path):
    workdir.prepare(tmp_path / "w", _spec(tmp_path), resume=False)
    (tmp_path / "w" / "tiles" / "r0000_c0000.npz").write_bytes(b"old")
    workdir.prepare(tmp_path / "w", _spec(tmp_path), resume=False)
    assert not any((tmp_path / "w" / "tiles").iterdir())


def test_scores_and_a_layer_added_later(tmp_path):
    """Blended layers: scores kept per tile, the blended layer added to the saved tile afterwards."""
    work = tmp_path / "w"
    workdir.prepare(work, _spec(tmp_path), resume=False)
    tile = TileGrid(20, 20, 10, 2)[0, 0]
    scores = np.random.default_rng(0).random((3, 14, 14)).astype(np.float32)
    workdir.save_scores(work, "landcover", tile.id, scores)
    np.testing.assert_allclose(workdir.load_scores(work, "landcover", tile.id), scores, atol=1e-3)
    assert workdir.load_scores(work, "landcover", "r0009_c0009") is None

    labels = np.zeros((14, 14), np.int32)
    labels[2:12, 2:12] = 1
    layer, core = tile_layer(InstanceOutput(labels, [InstanceInfo(1, 1.0)]), tile)
    workdir.save_tile(work, tile.id, {"fields": layer}, {"fields": core}, workdir.StageSeconds(read=0.5))
    assert workdir.load_core(work, tile.id, "landcover") is None
    workdir.add_layer(work, tile.id, "landcover", layer, core)
    saved = workdir.load_tile(work, tile.id)
    assert saved is not None and set(saved.layers) == {"fields", "landcover"}
    assert saved.seconds.read == 0.5 and np.isnan(saved.seconds.model)  # untimed stages stay NaN
    np.testing.assert_array_equal(workdir.load_core(work, tile.id, "landcover"), core)
    workdir.prepare(work, _spec(tmp_path), resume=False)
    assert not (work / "scores").exists()  # a fresh run drops old scores too


def _stitched(i: int, x: int, y: int, tiles: list[tuple[str, int]]) -> StitchedObject:
    geom = shapely.box(x, y, x + 3, y + 2) if i % 3 else shapely.MultiPolygon([shapely.box(x, y, x + 1, y + 1)] * 1)
    return StitchedObject(
        id=0, geometry=geom, pixels=6 + i, score=1 / (i + 3), cls=i % 2, key=None if i % 4 else f"k{i}",
        stability=None, attrs={"n": i} if i % 4 == 0 else {}, class_counts=np.arange(4, dtype=np.int64) * i,
        index_means={"ndvi": 0.1 * i, "ndre": float("nan")}, index_medians={"ndvi": 0.5}, fragments=tiles,
        index_p10={"ndvi": -0.25}, masked_pixels=i, edge_sides=2 * i, edge_sides_masked=i // 2,
    )  # fmt: skip


def test_object_spool_gives_objects_back_in_reading_order_with_ids(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_module, "FLUSH_ROWS", 3)
    rng = np.random.default_rng(0)
    objects = [
        _stitched(i, int(x), int(y), [("r0000_c0001", i + 1), ("r0000_c0000", i + 1)])
        for i, (x, y) in enumerate(rng.integers(0, 50, (25, 2)))
    ]
    spool = ObjectSpool(tmp_path / "objects.fields.sqlite")
    for obj in objects:
        spool.put(obj)
    assert spool.count == 25 and spool.any_multi and spool.columns.prompts and spool.columns.indices == {"ndvi", "ndre"}
    batches = list(spool.batches(4))
    assert [len(b) for b in batches] == [4] * 6 + [1]
    back = [obj for batch in batches for obj in batch]
    expected = sorted(objects, key=lambda o: o.sort_key())
    assert [o.id for o in back] == list(range(1, 26))
    for a, b in zip(back, expected, strict=True):
        assert a.geometry.equals_exact(b.geometry, 0) and a.geometry.geom_type == b.geometry.geom_type
        np.testing.assert_array_equal(a.class_counts, b.class_counts)
        for name in ("pixels", "score", "cls", "key", "attrs", "index_medians", "fragments", "edge_sides_masked"):
            assert getattr(a, name) == getattr(b, name)
        assert a.index_means["ndvi"] == b.index_means["ndvi"] and np.isnan(a.index_means["ndre"])
    spool.record_ids(back[:2], kept={back[1].id})
    lut = spool.id_lut("r0000_c0000")
    label = back[1].fragments[1][1]
    assert lut[label] == 2 and int(lut.sum()) == 2  # only the kept object's fragment
    assert spool.id_lut("r0009_c0009").tolist() == [0]
    spool.close()
    assert not list(tmp_path.iterdir())


def test_empty_spool_gives_one_empty_batch(tmp_path):
    spool = ObjectSpool(tmp_path / "s.sqlite")
    assert [len(b) for b in spool.batches(10)] == [0]
    spool.close()


# --------------------------------------------------------------------------------------------- ownership and lock
def _saved_tile(work, job=""):
    tile = TileGrid(20, 20, 10, 2)[0, 0]
    labels = np.zeros((14, 14), np.int32)
    labels[2:12, 2:12] = 1
    layer, core = tile_layer(InstanceOutput(labels, [InstanceInfo(1, 1.0)]), tile)
    workdir.save_tile(work, tile.id, {"fields": layer}, {"fields": core}, workdir.StageSeconds(read=0.5), job)
    return tile.id


def test_a_folder_geoseg_did_not_make_is_never_emptied(tmp_path):
    """``work_dir: .`` beside inputs kept in ``tiles/``: refused in one line, the inputs left as they were."""
    (tmp_path / "tiles").mkdir()
    (tmp_path / "tiles" / "a_B03.tif").write_bytes(b"input")
    with pytest.raises(WorkDirError, match=r"not a geoseg work dir \(no manifest.json, but tiles\)"):
        workdir.prepare(tmp_path, _spec(tmp_path), resume=False)
    assert (tmp_path / "tiles" / "a_B03.tif").read_bytes() == b"input"

    work = tmp_path / "w"  # a real work dir that also holds a foreign file in tiles/
    workdir.prepare(work, _spec(tmp_path), resume=False)
    (work / "tiles" / "notes.txt").write_text("mine")
    with pytest.raises(WorkDirError, match=r"\(tiles/notes.txt\)"):
        workdir.prepare(work, _spec(tmp_path), resume=False)
    assert (work / "tiles" / "notes.txt").exists()
    (work / "tiles" / "notes.txt").unlink()
    (work / "readme.md").write_text("x")
    with pytest.raises(WorkDirError, match=r"\(readme.md\)"):
        workdir.prepare(work, _spec(tmp_path), resume=False)


def test_a_work_dir_of_geoseg_files_only_is_claimed(tmp_path):
    work = tmp_path / "w"
    workdir.prepare(work, _spec(tmp_path), resume=False)
    _saved_tile(work)
    workdir.save_scores(work, "landcover", "r0000_c0000", np.zeros((2, 4, 4), np.float32))
    (work / "objects.fields").write_bytes(b"spool")
    (work / ".manifest.json.tmp-0a1b2c3d.json").write_text("{")  # a temp a killed run left
    assert foreign_entry(work) is None
    with claimed(work):
        assert (work / "lock").read_text() == ""  # nothing written: a refused job changes nothing
    assert foreign_entry(tmp_path / "missing") is None
    (tmp_path / "file").write_text("x")
    assert foreign_entry(tmp_path / "file") == "it is a file"


def test_one_job_per_work_dir_and_a_dead_holder_frees_it(tmp_path):
    """The lock is an OS lock: a second claim is refused while one is held, and a killed holder frees it."""
    work = tmp_path / "w"
    with (
        claimed(work),
        pytest.raises(WorkDirError, match=r"in use by another geoseg job \(pid \d+ on "),
        claimed(work),
    ):
        pass
    script = (
        "import sys, time; from pathlib import Path; from geoseg.run.claim import claimed\n"
        "with claimed(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script, str(work)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(WorkDirError, match=rf"pid {holder.pid} on "), claimed(work):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with claimed(work):  # the OS dropped the dead driver's lock
        pass


def test_resume_redoes_tiles_of_another_job_or_damaged_ones(tmp_path):
    """Each tile file carries its job's key; a file of another job, or a torn / emptied / bit-flipped one, is not
    resumed (StaleTileError) instead of crashing or being taken as this job's."""
    work = tmp_path / "w"
    key = workdir.prepare(work, _spec(tmp_path), resume=False)
    tile_id = _saved_tile(work, key)
    assert workdir.load_tile(work, tile_id, key) is not None
    path = workdir.tile_path(work, tile_id)
    good = path.read_bytes()
    other = workdir.prepare(work, _spec(tmp_path, threshold=0.6), resume=False)
    assert other != key
    _saved_tile(work, other)
    with pytest.raises(workdir.StaleTileError, match="saved by another job"):
        workdir.load_tile(work, tile_id, key)
    with zipfile.ZipFile(path) as archive:  # a bit flipped inside the largest member's compressed data
        member = max(archive.infolist(), key=lambda m: m.compress_size)
    head = member.header_offset  # local header: 30 bytes, then the name and the extra field (lengths at 26, 28)
    name, extra = (int.from_bytes(good[head + at : head + at + 2], "little") for at in (26, 28))
    lengths = name + extra
    middle = head + 30 + lengths + member.compress_size // 2
    flipped = good[:middle] + bytes([good[middle] ^ 0x10]) + good[middle + 1 :]
    for damaged in (good[: len(good) // 3], b"", flipped):
        path.write_bytes(damaged)
        with pytest.raises(workdir.StaleTileError, match="unreadable"):
            workdir.load_tile(work, tile_id, key)
    workdir.discard_tile(work, tile_id)
    assert workdir.load_tile(work, tile_id, key) is None


def test_a_torn_manifest_is_redone_on_resume(tmp_path, caplog):
    work = tmp_path / "w"
    key = workdir.prepare(work, _spec(tmp_path), resume=False)
    (work / "manifest.json").write_text('{"job": "x", "finger')
    with caplog.at_level("WARNING"):
        assert workdir.prepare(work, _spec(tmp_path), resume=True) == key
    assert "unreadable" in caplog.text
    assert workdir.prepare(work, _spec(tmp_path), resume=True) == key  # rewritten whole
