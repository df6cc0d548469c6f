"""SAM weights: the variant table, the checkpoint registry, a verified download cache, and loading.

A local checkpoint path always works. Otherwise :func:`resolve_checkpoint` returns the verified file in the cache
(``$GEOSEG_CACHE``, default ``~/.cache/geoseg/weights``) and never touches the network; downloads happen only when
the user asks (``geoseg models download vit_b`` -> :func:`download_checkpoint`). A download streams to a ``.part``
file, resumes it with an HTTP ``Range`` request, and is checked for size and sha256 before an atomic rename; a
``<file>.sha256`` marker beside the file records that it was verified, so later runs need not re-hash gigabytes.

torch and segment-anything are imported only by the functions that build or load a model, so the registry and
the cache can be listed by a CLI (or validated in a spec) without them.
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
from typing import TYPE_CHECKING, Any

from geoseg.errors import SpecError, WeightsError, error_gist

if TYPE_CHECKING:
    from segment_anything.modeling import Sam

_CHUNK = 1 << 20
_TIMEOUT_S = 60
_USER_AGENT = "geoseg-weights/1"


# --------------------------------------------------------------------------------------------- variants
@dataclass(frozen=True)
class SamConfig:
    """Architecture of one SAM variant (segment-anything's ``_build_sam`` arguments, plus decoder sizes)."""

    embed_dim: int
    """Width of the ViT image encoder."""
    depth: int
    """Number of ViT blocks."""
    num_heads: int
    """Attention heads per ViT block."""
    global_attn_indexes: tuple[int, ...]
    """Blocks with global attention; the others attend within ``window_size`` windows."""
    image_size: int = 1024
    """Side of the square encoder input; tiles are resized so their longest side has this length."""
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    """Width of the image embedding, prompt encoder and mask decoder."""
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    mask_in_chans: int = 16
    iou_head_hidden_dim: int = 256


VARIANTS: dict[str, SamConfig] = {
    "vit_h": SamConfig(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
    "vit_l": SamConfig(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_b": SamConfig(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
}
"""Variant name -> architecture. Test code registers tiny variants with :func:`register_variant`."""


def register_variant(name: str, config: SamConfig) -> None:
    """Add (or replace) a variant in the config table, e.g. a tiny test model."""
    VARIANTS[name] = config


def variant_config(variant: str) -> SamConfig:
    """The architecture of ``variant``; SpecError naming the known variants if there is none."""
    try:
        return VARIANTS[variant]
    except KeyError:
        known = ", ".join(sorted(VARIANTS))
        raise SpecError(f"unknown SAM variant {variant!r}: set `variant:` to one of {known}") from None


def build_sam_model(config: SamConfig) -> Sam:
    """Build a randomly initialised SAM of any variant from segment-anything's own modules."""
    from functools import partial

    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = config.image_size // config.patch_size
    encoder = ImageEncoderViT(
        depth=config.depth,
        embed_dim=config.embed_dim,
        img_size=config.image_size,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=config.num_heads,
        patch_size=config.patch_size,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=config.global_attn_indexes,
        window_size=config.window_size,
        out_chans=config.prompt_embed_dim,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=config.prompt_embed_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(config.image_size, config.image_size),
        mask_in_chans=config.mask_in_chans,
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(
            depth=2,
            embedding_dim=config.prompt_embed_dim,
            mlp_dim=config.decoder_mlp_dim,
            num_heads=config.decoder_num_heads,
        ),
        transformer_dim=config.prompt_embed_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=config.iou_head_hidden_dim,
    )
    sam = Sam(
        image_encoder=encoder,
        prompt_encoder=prompt_encoder,
        mask_decoder=decoder,
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


# --------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Checkpoint:
    """A downloadable checkpoint, pinned by URL, size and sha256."""

    name: str
    """Name used on the command line (``geoseg models download <name>``)."""
    variant: str
    """Variant in :data:`VARIANTS` whose architecture the weights fit."""
    url: str
    sha256: str
    """Lower-case hex digest of the whole file."""
    size: int
    """Size in bytes."""

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_FB = "https://dl.fbaipublicfiles.com/segment_anything"

# Official SAM v1 checkpoints (facebookresearch/segment-anything README). The sha256 digests and byte sizes are not
# published by Meta; they were cross-checked in several independent public repositories that pin these files
# (e.g. computational-cell-analytics/micro-sam's model registry and download manifests listing byte sizes), which
# all agree on the values below.
CHECKPOINTS: dict[str, Checkpoint] = {
    "vit_h": Checkpoint(
        "vit_h", "vit_h", f"{_FB}/sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", 2564550879,
    ),
    "vit_l": Checkpoint(
        "vit_l", "vit_l", f"{_FB}/sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", 1249524607,
    ),
    "vit_b": Checkpoint(
        "vit_b", "vit_b", f"{_FB}/sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", 375042383,
    ),
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


def _is_verified(entry: Checkpoint, path: Path) -> bool:
    """True when ``path`` has the entry's size and a newer marker recording its sha256 (no hashing)."""
    marker = _marker(path)
    try:
        stat = path.stat()
        return (
            stat.st_size == entry.size
            and marker.stat().st_mtime >= stat.st_mtime
            and marker.read_text().strip() == entry.sha256
        )
    except OSError:
        return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _write_marker(path: Path, sha256: str) -> None:
    tmp = _marker(path).with_suffix(".tmp")
    tmp.write_text(sha256 + "\n")
    os.replace(tmp, _marker(path))


def _verify_in_place(entry: Checkpoint, path: Path) -> bool:
    """Hash a cached file that has no marker yet (e.g. copied in by hand); write the marker if it is good."""
    if _is_verified(entry, path):
        return True
    if not path.is_file() or path.stat().st_size != entry.size or _sha256(path) != entry.sha256:
        return False
    _write_marker(path, entry.sha256)
    return True


def registry_table(cache_dir: Path | None = None) -> list[dict[str, Any]]:
    """One row per registered checkpoint: name, variant, size (bytes), url, cached, path."""
    root = cache_dir or default_cache_dir()
    return [
        {
            "name": e.name,
            "variant": e.variant,
            "size": e.size,
            "url": e.url,
            "cached": _is_verified(e, root / e.filename),
            "path": str(root / e.filename),
        }
        for e in CHECKPOINTS.values()
    ]


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
    if offset >= entry.size:
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
                    progress(done, entry.size)
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


def _verify_part(entry: Checkpoint, url: str, part: Path) -> None:
    """Check a finished ``.part``; delete it if it can never become right."""
    size = part.stat().st_size
    if size < entry.size:
        raise WeightsError(
            f"download of {entry.name} incomplete: {size} of {entry.size} bytes; run the same command again to resume"
        )
    digest = _sha256(part) if size == entry.size else ""
    if digest != entry.sha256:
        part.unlink()
        got = f"sha256 {digest[:12]}…" if digest else f"{size} bytes"
        raise WeightsError(
            f"download of {entry.name} from {url} is corrupt ({got}, expected sha256 {entry.sha256[:12]}…, "
            f"{entry.size} bytes); the file was deleted, run the download again or check the URL"
        )


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
        _verify_part(entry, url, part)
        os.replace(part, dest)
        _write_marker(dest, entry.sha256)
    return dest


def resolve_checkpoint(variant: str, checkpoint: str | None, cache_dir: Path | None = None) -> Path:
    """The weights file to load: a local path if given, else the verified cached download. Never networks.

    Raises:
        WeightsError: the local path does not exist, or the cache lacks the variant's checkpoint.
    """
    variant_config(variant)
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"SAM checkpoint {path} not found: fix `checkpoint:` or remove it to use the cached {variant} download"
            )
        return path
    entries = [e for e in CHECKPOINTS.values() if e.variant == variant]
    if not entries:
        raise WeightsError(f"SAM variant {variant} has no registered download: set `checkpoint:` to a local .pth")
    root = cache_dir or default_cache_dir()
    for entry in entries:
        if _verify_in_place(entry, root / entry.filename):
            return root / entry.filename
    raise WeightsError(
        f"SAM {variant} weights are not in the cache {root}: run: geoseg models download {entries[0].name} "
        f"(or set `checkpoint:` to a local .pth)"
    )


# --------------------------------------------------------------------------------------------- loading
def _read_state_dict(path: Path, variant: str) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with one-line errors for missing, truncated or non-state-dict files."""
    import pickle

    import torch

    hint = f"run: geoseg models download {variant}" if variant in CHECKPOINTS else "fix `checkpoint:`"
    if not path.is_file():
        raise WeightsError(f"SAM checkpoint {path} not found: {hint}")
    for entry in CHECKPOINTS.values():
        if entry.filename == path.name and path.stat().st_size != entry.size:
            raise WeightsError(
                f"SAM checkpoint {path} is truncated ({path.stat().st_size} of {entry.size} bytes): "
                f"delete it and {hint}"
            )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" in str(err) or "Weights only" in str(err):
            raise WeightsError(
                f"SAM checkpoint {path} is not a plain state_dict (torch.load weights_only=True refused it): "
                f"save model.state_dict() instead"
            ) from None
        raise WeightsError(f"SAM checkpoint {path} is corrupt ({error_gist(err)}): {hint}") from None
    except Exception as err:
        raise WeightsError(f"SAM checkpoint {path} is truncated or corrupt ({error_gist(err)}): {hint}") from None
    if not isinstance(state, dict) or "image_encoder.patch_embed.proj.weight" not in state:
        raise WeightsError(f"SAM checkpoint {path} does not hold a SAM state_dict: {hint}")
    return state


def _shape_of(state: dict[str, Any]) -> tuple[int, int]:
    """(encoder width, encoder depth) of a SAM state_dict."""
    width = int(state["image_encoder.patch_embed.proj.weight"].shape[0])
    blocks = {int(k.split(".")[2]) for k in state if k.startswith("image_encoder.blocks.")}
    return width, (max(blocks) + 1 if blocks else 0)


def _check_variant(state: dict[str, Any], variant: str, config: SamConfig, path: Path) -> None:
    """Refuse weights of another variant before building a model, naming the variant they look like."""
    width, depth = _shape_of(state)
    if (width, depth) == (config.embed_dim, config.depth):
        return
    guesses = [n for n, c in VARIANTS.items() if (c.embed_dim, c.depth) == (width, depth)]
    looks = f"it looks like {guesses[0]!r}" if guesses else "no known variant has that shape"
    fix = f"set `variant: {guesses[0]}`" if guesses else "use a checkpoint of this variant"
    raise WeightsError(
        f"SAM checkpoint {path} does not match variant {variant!r} (encoder width {width}, depth {depth}; "
        f"{looks}): {fix}"
    )


def load_sam(variant: str, path: str | Path, device: str = "cpu") -> Sam:
    """Build the ``variant`` architecture and load verified weights into it.

    Args:
        variant: a name in :data:`VARIANTS`.
        path: a checkpoint holding a plain ``state_dict`` (as the official files do).
        device: torch device string.

    Raises:
        WeightsError: missing, truncated or corrupt file, or weights of another variant.
    """
    config = variant_config(variant)
    path = Path(path)
    state = _read_state_dict(path, variant)
    _check_variant(state, variant, config, path)
    model = build_sam_model(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise WeightsError(
            f"SAM checkpoint {path} does not fit variant {variant!r} ({error_gist(err)}): "
            f"use a checkpoint of this variant"
        ) from None
    return model.to(device).eval()
