"""Checkpoints of every model family: the registry, a verified download cache, and which file a spec loads. No torch.

A local checkpoint path always works. Otherwise :func:`resolve_checkpoint` returns the verified file in the cache
(``$GEOSEG_CACHE``, default ``~/.cache/geoseg/weights``) and never touches the network; downloads happen only when
the user asks (``geoseg models download vit_b`` -> :func:`download_checkpoint`). A download streams to a ``.part``
file, resumes it with an HTTP ``Range`` request, and is checked for size and sha256 before an atomic rename; a
``<file>.sha256`` marker beside the file records that it was verified, so later runs need not re-hash gigabytes.

The registry holds SAM's checkpoints (below), the Fields of The World U-Nets (:mod:`geoseg.models.ftw.variants`) and
Delineate Anything (:mod:`geoseg.models.delineate_anything.variants`); a family lists :class:`Checkpoint` records.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoseg.atomic import atomic_write
from geoseg.errors import WeightsError
from geoseg.models.delineate_anything.variants import DA_CHECKPOINTS
from geoseg.models.ftw.variants import FTW_CHECKPOINTS
from geoseg.models.pinned import Checkpoint
from geoseg.models.sam.variants import variant_config

_CHUNK = 1 << 20
_TIMEOUT_S = 60
_USER_AGENT = "geoseg-weights/1"


# --------------------------------------------------------------------------------------------- registry
_FB = "https://dl.fbaipublicfiles.com/segment_anything"

# Official SAM v1 checkpoints (facebookresearch/segment-anything README). The sha256 digests and byte sizes are not
# published by Meta; they were cross-checked in several independent public repositories that pin these files
# (e.g. computational-cell-analytics/micro-sam's model registry and download manifests listing byte sizes), which
# all agree on the values below.
CHECKPOINTS: dict[str, Checkpoint] = {
    "vit_h": Checkpoint(
        "vit_h", "vit_h", f"{_FB}/sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", 2564550879, "Apache-2.0",
    ),
    "vit_l": Checkpoint(
        "vit_l", "vit_l", f"{_FB}/sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", 1249524607, "Apache-2.0",
    ),
    "vit_b": Checkpoint(
        "vit_b", "vit_b", f"{_FB}/sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", 375042383, "Apache-2.0",
    ),
    **{entry.name: entry for entry in (*FTW_CHECKPOINTS, *DA_CHECKPOINTS)},
}  # fmt: skip
"""Checkpoint name -> entry."""


def register_checkpoint(entry: Checkpoint) -> None:
    """Add (or replace) a registry entry, e.g. a private fine-tune served from an internal URL."""
    CHECKPOINTS[entry.name] = entry


def _entry(name: str) -> Checkpoint:
    try:
        return CHECKPOINTS[name]
    except KeyError:
        known = ", ".join(sorted(CHECKPOINTS))
        raise WeightsError(f"unknown checkpoint {name!r}: choose one of {known}") from None


def default_cache_dir() -> Path:
    """``$GEOSEG_CACHE`` if set, else ``~/.cache/geoseg/weights``."""
    env = os.environ.get("GEOSEG_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "geoseg" / "weights"


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _size_ok(entry: Checkpoint, size: int) -> bool:
    return entry.size is None or size == entry.size


def _is_verified(entry: Checkpoint, path: Path) -> bool:
    """True when ``path`` has the entry's size and a newer marker recording its sha256 (no hashing)."""
    marker = _marker(path)
    try:
        stat = path.stat()
        return (
            _size_ok(entry, stat.st_size)
            and marker.stat().st_mtime >= stat.st_mtime
            and entry.matches(marker.read_text().strip())
        )
    except OSError:
        return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """A checkpoint's sha256: read from its verification marker when one is newer than the file (no hashing of
    gigabytes on every run), else computed."""
    marker = _marker(path)
    try:
        if marker.stat().st_mtime >= path.stat().st_mtime:
            return marker.read_text().strip()
    except OSError:
        pass
    return _sha256(path)


def _write_marker(path: Path, sha256: str) -> None:
    atomic_write(_marker(path), lambda tmp: tmp.write_text(sha256 + "\n"))


def _verify_in_place(entry: Checkpoint, path: Path) -> bool:
    """Hash a cached file that has no marker yet (e.g. copied in by hand); write the marker if it is good."""
    if _is_verified(entry, path):
        return True
    if not path.is_file() or not _size_ok(entry, path.stat().st_size):
        return False
    digest = _sha256(path)
    if not entry.matches(digest):
        return False
    _write_marker(path, digest)
    return True


@dataclass(frozen=True)
class CachedCheckpoint:
    """A registered checkpoint and its place in the cache (``geoseg models list``)."""

    entry: Checkpoint
    path: Path
    cached: bool
    """Present and verified (size and sha256)."""


def registry_table(cache_dir: Path | None = None) -> list[CachedCheckpoint]:
    """One row per registered checkpoint: the entry, where the cache keeps it, whether it is there (verified)."""
    root = cache_dir or default_cache_dir()
    return [CachedCheckpoint(e, root / e.filename, _is_verified(e, root / e.filename)) for e in CHECKPOINTS.values()]


# --------------------------------------------------------------------------------------------- download
@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock so two processes never write the same ``.part`` (POSIX; no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _range_start(content_range: str | None) -> int | None:
    """First byte of a ``Content-Range: bytes a-b/n`` header."""
    match = re.match(r"bytes (\d+)-", content_range or "")
    return int(match.group(1)) if match else None


def _open(url: str, offset: int) -> tuple[Any, int]:
    """Open ``url`` from ``offset``; returns the response and the offset the server actually honoured."""
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=_TIMEOUT_S)
    if offset and (response.status != 206 or _range_start(response.headers.get("Content-Range")) != offset):
        offset = 0  # the server ignored the range: start over
    return response, offset


def _fetch(entry: Checkpoint, url: str, part: Path, progress: Callable[[int, int], None] | None) -> None:
    """Stream ``url`` into ``part``, resuming what is already there. Raises WeightsError if interrupted."""
    offset = part.stat().st_size if part.exists() else 0
    if entry.size is not None and offset >= entry.size:
        return  # complete or oversized: verification decides
    done = offset
    try:
        response, offset = _open(url, offset)
        done = offset
        with response, part.open("ab" if offset else "wb") as out:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, entry.size or 0)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            return  # nothing left to send: verification decides
        raise WeightsError(f"download of {entry.name} failed: HTTP {err.code} {err.reason} from {url}") from None
    except (OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", None) or err
        raise WeightsError(
            f"download of {entry.name} interrupted at {done} of {entry.size} bytes ({reason}); "
            f"run the same command again to resume"
        ) from None


def _verify_part(entry: Checkpoint, url: str, part: Path) -> str:
    """Check a finished ``.part`` and return its sha256; delete it if it can never become right."""
    size = part.stat().st_size
    if entry.size is not None and size < entry.size:
        raise WeightsError(
            f"download of {entry.name} incomplete: {size} of {entry.size} bytes; run the same command again to resume"
        )
    digest = _sha256(part) if _size_ok(entry, size) else ""
    if not entry.matches(digest):
        part.unlink()
        got = f"sha256 {digest[:12]}…" if digest else f"{size} bytes"
        expected = f", {entry.size} bytes" if entry.size is not None else ""
        raise WeightsError(
            f"download of {entry.name} from {url} is corrupt ({got}, expected sha256 {entry.sha256[:12]}…{expected}); "
            f"the file was deleted, run the download again or check the URL"
        )
    return digest


def download_checkpoint(
    name: str,
    cache_dir: Path | None = None,
    url: str | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Download a registered checkpoint into the cache (resuming a partial download) and verify it.

    Args:
        name: registry name, e.g. ``"vit_b"``.
        cache_dir: where to keep it; default :func:`default_cache_dir`.
        url: a mirror of the same file; default the registry's URL. The pinned size and sha256 still apply.
        progress: called with (bytes done, bytes total) while streaming.

    Returns:
        The verified file. A file that is already cached and verified is returned without network access.
    """
    entry = _entry(name)
    url = url or entry.url
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    dest = root / entry.filename
    part = dest.with_name(dest.name + ".part")
    with _lock(dest.with_name(dest.name + ".lock")):
        if _verify_in_place(entry, dest):
            return dest
        _fetch(entry, url, part, progress)
        digest = _verify_part(entry, url, part)
        os.replace(part, dest)
        _write_marker(dest, digest)
    return dest


def resolve_checkpoint(variant: str, checkpoint: str | None, cache_dir: Path | None = None) -> Path:
    """The SAM weights file to load: a local path if given, else the verified cached download. Never networks.

    Raises:
        WeightsError: the local path does not exist, or the cache lacks the variant's checkpoint.
    """
    variant_config(variant)
    entries = [e for e in CHECKPOINTS.values() if e.variant == variant and e.family == "sam"]
    return resolve_weights(f"SAM {variant}", entries, checkpoint, cache_dir, local_kind=".pth")


def resolve_family(family: str, variant: str, checkpoint: str | None, cache_dir: Path | None = None) -> Path:
    """The weights file of an ``ftw`` or ``delineate_anything`` spec: its ``checkpoint:``, else the first registered
    download of its variant that is in the cache, verified. Never networks.

    Raises:
        WeightsError: as :func:`resolve_weights`.
    """
    entries = [e for e in CHECKPOINTS.values() if e.family == family and e.variant == variant]
    return resolve_weights(f"{family} {variant}", entries, checkpoint, cache_dir)


def resolve_weights(
    what: str, entries: list[Checkpoint], checkpoint: str | None, cache_dir: Path | None = None, local_kind: str = ""
) -> Path:
    """The weights file a spec loads: its local ``checkpoint`` if given, else the first of ``entries`` that is in the
    cache, verified. Never networks.

    Args:
        what: the model as the error messages name it, e.g. ``"SAM vit_b"``.
        entries: registry entries whose files fit the model, preferred first.
        checkpoint: the spec's ``checkpoint:`` (a local path) or None.
        cache_dir: the download cache; default :func:`default_cache_dir`.
        local_kind: what a local file is, for the messages (``.pth``).

    Raises:
        WeightsError: the local path does not exist, or the cache holds none of the entries.
    """
    local = f"a local {local_kind} file" if local_kind else "a local file"
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"{what} checkpoint {path} not found: fix `checkpoint:` or remove it to use the cached download"
            )
        return path
    if not entries:
        raise WeightsError(f"{what} has no registered download: set `checkpoint:` to {local}")
    root = cache_dir or default_cache_dir()
    for entry in entries:
        if _verify_in_place(entry, root / entry.filename):
            return root / entry.filename
    raise WeightsError(
        f"{what} weights are not in the cache {root}: run: geoseg models download {entries[0].name} "
        f"(or set `checkpoint:` to {local})"
    )
