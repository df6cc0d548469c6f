"""Weights registry, verified download cache (local HTTP server) and checkpoint loading."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from geoseg.errors import SpecError, WeightsError
from geoseg.models import checkpoints
from geoseg.models.checkpoints import Checkpoint, download_checkpoint, registry_table, resolve_checkpoint
from geoseg.models.sam import variants as sam_variants
from geoseg.models.sam.weights import load_sam
from geoseg.testutils.tiny_sam import TINY_VARIANT, write_tiny_checkpoint

PAYLOAD = bytes(range(256)) * 1200  # 300 KiB, several read chunks


class _Server:
    """What the handler serves and what it saw."""

    def __init__(self) -> None:
        self.payload = PAYLOAD
        self.cut_first_at: int | None = None  # send only this many bytes on the first request
        self.honour_range = True
        self.requests: list[str | None] = []  # Range header of each request


def _handler(state: _Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            header = self.headers.get("Range")
            state.requests.append(header)
            data, start = state.payload, 0
            match = re.match(r"bytes=(\d+)-", header or "")
            if match and state.honour_range:
                start = int(match.group(1))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state.cut_first_at is not None and len(state.requests) == 1:
                self.wfile.write(body[: state.cut_first_at])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[_Server, str]]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    state = _Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{httpd.server_address[1]}/weights/test_ckpt.pth"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def entry(monkeypatch: pytest.MonkeyPatch, server: tuple[_Server, str]) -> Checkpoint:
    """A registry entry pinned to PAYLOAD, served by the local server (removed again after the test)."""
    _, url = server
    item = Checkpoint("test_ckpt", "vit_b", url, hashlib.sha256(PAYLOAD).hexdigest(), len(PAYLOAD))
    monkeypatch.setitem(checkpoints.CHECKPOINTS, item.name, item)
    return item


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.pth")


# --------------------------------------------------------------------------------------------- registry
def test_registry_pins_the_official_checkpoints(tmp_path: Path) -> None:
    rows = {row.entry.name: row for row in registry_table(tmp_path)}
    assert {"vit_b", "vit_l", "vit_h"} <= set(rows)
    for name in ("vit_b", "vit_l", "vit_h"):
        entry = checkpoints.CHECKPOINTS[name]
        assert rows[name].entry.variant == name and rows[name].cached is False
        assert entry.url.startswith("https://dl.fbaipublicfiles.com/segment_anything/sam_" + name)
        assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256) and entry.size is not None and entry.size > 300_000_000
        assert entry.variant in sam_variants.VARIANTS


def test_unknown_names_say_what_exists() -> None:
    with pytest.raises(WeightsError, match=r"choose one of .*vit_b"):
        download_checkpoint("vit_q")
    with pytest.raises(SpecError, match="unknown SAM variant 'vit_q'"):
        resolve_checkpoint("vit_q", None)


# --------------------------------------------------------------------------------------------- download
def test_download_verifies_and_caches(tmp_path: Path, server: tuple[_Server, str], entry: Checkpoint) -> None:
    state, _ = server
    seen: list[tuple[int, int]] = []
    path = download_checkpoint(entry.name, tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "test_ckpt.pth" and path.read_bytes() == PAYLOAD
    assert not path.with_name("test_ckpt.pth.part").exists()
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert {r.entry.name: r.cached for r in registry_table(tmp_path)}["test_ckpt"] is True
    # cached: no second request
    assert download_checkpoint(entry.name, tmp_path) == path
    assert len(state.requests) == 1


def test_wrong_checksum_deletes_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: tuple[_Server, str], entry: Checkpoint
) -> None:
    bad = Checkpoint(entry.name, entry.variant, entry.url, "0" * 64, entry.size)
    monkeypatch.setitem(checkpoints.CHECKPOINTS, bad.name, bad)
    with pytest.raises(WeightsError, match=r"corrupt .*was deleted"):
        download_checkpoint(bad.name, tmp_path)
    assert list(tmp_path.glob("test_ckpt.pth*")) in ([], [tmp_path / "test_ckpt.pth.lock"])


def test_interrupted_download_resumes_with_range(
    tmp_path: Path, server: tuple[_Server, str], entry: Checkpoint
) -> None:
    state, _ = server
    state.cut_first_at = 100_000
    with pytest.raises(WeightsError, match="run the same command again to resume"):
        download_checkpoint(entry.name, tmp_path)
    part = tmp_path / "test_ckpt.pth.part"
    assert part.stat().st_size == 100_000
    path = download_checkpoint(entry.name, tmp_path)
    assert state.requests == [None, "bytes=100000-"]
    assert path.read_bytes() == PAYLOAD and not part.exists()


def test_server_ignoring_range_restarts_cleanly(tmp_path: Path, server: tuple[_Server, str], entry: Checkpoint) -> None:
    state, _ = server
    state.honour_range = False
    (tmp_path / "test_ckpt.pth.part").write_bytes(b"x" * 5000)  # stale junk
    path = download_checkpoint(entry.name, tmp_path)
    assert state.requests == ["bytes=5000-"]
    assert path.read_bytes() == PAYLOAD


def test_url_override_is_a_mirror_of_the_same_file(tmp_path: Path, server: tuple[_Server, str]) -> None:
    state, url = server
    pinned = Checkpoint("mirror", "vit_b", "https://invalid.example/mirror.pth", entry_sha(), len(PAYLOAD))
    checkpoints.register_checkpoint(pinned)
    try:
        assert download_checkpoint("mirror", tmp_path, url=url).read_bytes() == PAYLOAD
    finally:
        del checkpoints.CHECKPOINTS["mirror"]
    assert len(state.requests) == 1


def entry_sha() -> str:
    return hashlib.sha256(PAYLOAD).hexdigest()


# --------------------------------------------------------------------------------------------- resolve
def _no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("resolve_checkpoint must never touch the network")


def test_resolve_never_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: Checkpoint) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    monkeypatch.setenv("GEOSEG_CACHE", str(tmp_path))
    monkeypatch.delitem(checkpoints.CHECKPOINTS, "vit_b")  # the test entry is now vit_b's only download
    with pytest.raises(WeightsError, match="run: geoseg models download test_ckpt"):
        resolve_checkpoint("vit_b", None)
    # a file copied into the cache by hand is hashed once and then trusted through its marker
    (tmp_path / "test_ckpt.pth").write_bytes(PAYLOAD)
    assert resolve_checkpoint("vit_b", None) == tmp_path / "test_ckpt.pth"
    assert (tmp_path / "test_ckpt.pth.sha256").read_text().strip() == entry.sha256


def test_resolve_reports_the_download_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    monkeypatch.setenv("GEOSEG_CACHE", str(tmp_path / "empty"))
    with pytest.raises(WeightsError, match="run: geoseg models download vit_b"):
        resolve_checkpoint("vit_b", None)


def test_resolve_local_path(tmp_path: Path, tiny_ckpt: Path) -> None:
    assert resolve_checkpoint(TINY_VARIANT, str(tiny_ckpt)) == tiny_ckpt
    with pytest.raises(WeightsError, match="not found: fix `checkpoint:`"):
        resolve_checkpoint("vit_b", str(tmp_path / "nope.pth"))


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOSEG_CACHE", str(tmp_path))
    assert checkpoints.default_cache_dir() == tmp_path
    monkeypatch.delenv("GEOSEG_CACHE")
    assert checkpoints.default_cache_dir() == Path.home() / ".cache" / "geoseg" / "weights"


# --------------------------------------------------------------------------------------------- load
def test_load_tiny_checkpoint(tiny_ckpt: Path) -> None:
    sam = load_sam(TINY_VARIANT, tiny_ckpt, "cpu")
    assert sam.image_encoder.img_size == sam_variants.VARIANTS[TINY_VARIANT].image_size
    assert not sam.training


def test_load_uses_weights_only(tmp_path: Path, tiny_ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, object]] = []
    real_load = torch.load

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(kwargs)
        return real_load(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "load", spy)
    load_sam(TINY_VARIANT, tiny_ckpt)
    assert calls and calls[0]["weights_only"] is True and calls[0]["map_location"] == "cpu"


def test_pickled_module_is_refused(tmp_path: Path, tiny_ckpt: Path) -> None:
    pickled = tmp_path / "module.pth"
    torch.save(load_sam(TINY_VARIANT, tiny_ckpt), pickled)  # a whole pickled nn.Module, not a state_dict
    with pytest.raises(WeightsError, match="not a plain state_dict"):
        load_sam(TINY_VARIANT, pickled)


def test_mismatched_variant_names_the_right_one(tiny_ckpt: Path) -> None:
    with pytest.raises(WeightsError, match=r"does not match variant 'vit_b'.*looks like 'vit_tiny'"):
        load_sam("vit_b", tiny_ckpt)


def test_truncated_and_missing_files(tmp_path: Path, tiny_ckpt: Path) -> None:
    cut = tmp_path / "cut.pth"
    cut.write_bytes(tiny_ckpt.read_bytes()[: tiny_ckpt.stat().st_size // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_sam(TINY_VARIANT, cut)
    with pytest.raises(WeightsError, match="not found"):
        load_sam(TINY_VARIANT, tmp_path / "missing.pth")
    official = tmp_path / "sam_vit_b_01ec64.pth"
    official.write_bytes(b"\0" * 1000)
    with pytest.raises(WeightsError, match=r"truncated \(1000 of 375042383 bytes\).*geoseg models download vit_b"):
        load_sam("vit_b", official)


def test_errors_are_one_line(tmp_path: Path, tiny_ckpt: Path) -> None:
    cut = tmp_path / "cut.pth"
    cut.write_bytes(b"PK\x03\x04 garbage")
    for variant, path in ((TINY_VARIANT, cut), ("vit_b", tiny_ckpt)):
        with pytest.raises(WeightsError) as info:
            load_sam(variant, path)
        assert "\n" not in str(info.value)


def test_same_encoder_other_decoder_fails_strict_load(tiny_ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wide = dataclasses.replace(sam_variants.VARIANTS[TINY_VARIANT], decoder_mlp_dim=128)
    monkeypatch.setitem(sam_variants.VARIANTS, "vit_tiny_wide", wide)
    with pytest.raises(WeightsError, match=r"does not fit variant 'vit_tiny_wide' \(size mismatch for mask_decoder"):
        load_sam("vit_tiny_wide", tiny_ckpt)


# --------------------------------------------------------------------------------------------- CLI
def test_cli_models_download_then_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: Checkpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    from geoseg.cli import main

    monkeypatch.setenv("GEOSEG_CACHE", str(tmp_path))
    assert main(["models", "download", entry.name]) == 0
    assert json.loads(capsys.readouterr().out) == {"name": entry.name, "path": str(tmp_path / "test_ckpt.pth")}
    assert main(["models", "list"]) == 0
    listed = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "cached" in listed["test_ckpt"] and "cached" not in listed["vit_h"]


def test_cli_download_failure_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: tuple[_Server, str], entry: Checkpoint,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from geoseg.cli import main

    state, _ = server
    state.payload = b"x" * len(PAYLOAD)  # right size, wrong bytes
    monkeypatch.setenv("GEOSEG_CACHE", str(tmp_path))
    assert main(["models", "download", entry.name]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("geoseg: error:") and "sha256" in err and "\n" not in err
    assert not (tmp_path / "test_ckpt.pth").exists()


def test_file_sha256_trusts_a_newer_marker_and_rehashes_a_changed_file(tmp_path):
    """--resume fingerprints checkpoints by sha256; a verified download's marker spares re-hashing gigabytes."""
    import hashlib
    import os

    from geoseg.models.checkpoints import file_sha256

    weights = tmp_path / "w.pth"
    weights.write_bytes(b"weights")
    marker = tmp_path / "w.pth.sha256"
    marker.write_text("recorded\n")
    os.utime(weights, (1_000, 1_000))
    assert file_sha256(weights) == "recorded"
    os.utime(weights, None)  # edited after the marker was written: hash it
    os.utime(marker, (1_000, 1_000))
    assert file_sha256(weights) == hashlib.sha256(b"weights").hexdigest()
