"""SAM's image side, batched over tiles: device and precision, SDPA attention, scene-wide stretch, encoding.

Tiles are stretched to uint8 with *scene-wide* percentiles (never per tile, so a field looks the same in every
tile) and the image encoder runs once per batch (bf16 autocast on CUDA; attention through
``F.scaled_dot_product_attention`` with the relative-position bias as an additive mask).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.modeling.image_encoder import Attention, get_rel_pos
from segment_anything.utils.transforms import ResizeLongestSide

from geoseg.errors import SpecError
from geoseg.models.base import (
    SceneInfo,
)


# --------------------------------------------------------------------------------------------- device, precision
def torch_device(device: str) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpecError("SAM was asked to run on CUDA but torch sees no GPU: set compute.gpus_per_actor: 0")
    return dev


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a spec ``precision`` on ``device``; None means plain fp32."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def precision_autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


# --------------------------------------------------------------------------------------------- SDPA attention
def rel_pos_bias(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """segment-anything's decomposed relative-position term as an additive (B, heads, N, N) attention bias.

    Args:
        q: unscaled queries (B, heads, N, head_dim) of an ``h * w = N`` token grid.
    """
    h, w = size
    b, heads, n, c = q.shape
    r_q = q.reshape(b, heads, h, w, c)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, get_rel_pos(h, h, rel_pos_h).to(q.dtype))
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, get_rel_pos(w, w, rel_pos_w).to(q.dtype))
    return (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, heads, n, n)


class SdpaAttention(Attention):
    """The ViT attention of segment-anything computed by ``F.scaled_dot_product_attention``.

    Same parameters and state_dict keys as :class:`segment_anything.modeling.image_encoder.Attention`; the
    relative-position term goes in as ``attn_mask``, so fused kernels apply on CUDA.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, (h, w)) if self.use_rel_pos else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = out.view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(out)


def enable_sdpa(sam: Sam) -> Sam:
    """Switch every image-encoder block of ``sam`` to :class:`SdpaAttention` in place (weights untouched)."""
    for block in sam.image_encoder.blocks:
        if type(block.attn) is Attention:
            block.attn.__class__ = SdpaAttention
    return sam


# --------------------------------------------------------------------------------------------- stretch, encode
def stretch_limits(
    scene: SceneInfo, bands: Sequence[str], percentiles: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band reflectance mapped to 0 and to 255, read from the scene-wide percentile tables."""
    lows, highs = [], []
    for band in bands:
        values = scene.percentiles.get(band)
        if values is None or len(values) < 2:
            raise ValueError(f"SceneInfo.percentiles lacks band {band!r}: the driver must compute it for SAM")
        grid = np.linspace(0.0, 100.0, len(values))
        lows.append(np.interp(percentiles[0], grid, values))
        highs.append(np.interp(percentiles[1], grid, values))
    return np.asarray(lows, np.float32), np.asarray(highs, np.float32)


def stretch_to_uint8(pixels: np.ndarray, valid: np.ndarray, lows: np.ndarray, highs: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) reflectance -> (N, H, W, 3) uint8 with fixed per-band limits; invalid pixels are 0."""
    lo = lows.reshape(1, -1, 1, 1)
    span = np.maximum(highs - lows, np.float32(1e-12)).reshape(1, -1, 1, 1)
    scaled = np.nan_to_num((pixels - lo) * (np.float32(255.0) / span), nan=0.0)
    image = np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)
    image *= valid[:, None].astype(np.uint8)
    return np.ascontiguousarray(image.transpose(0, 2, 3, 1))


def encode_tiles(
    sam: Sam, images: np.ndarray, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Image embeddings of a batch of uint8 (N, H, W, 3) tiles in one encoder call.

    Each tile is prepared as ``SamPredictor.set_image`` prepares an image (resize of the longest side to the
    encoder size, normalisation, padding), so the embeddings equal the predictor's.

    Returns:
        (N, C, h, w) embeddings and the resized (unpadded) input size.
    """
    transform = ResizeLongestSide(sam.image_encoder.img_size)
    resized = np.stack([transform.apply_image(image) for image in images])
    batch = torch.as_tensor(resized, device=sam.device).permute(0, 3, 1, 2).float()
    with torch.inference_mode(), precision_autocast(sam.device, dtype):
        features = sam.image_encoder(sam.preprocess(batch))
    return features, (int(resized.shape[1]), int(resized.shape[2]))
