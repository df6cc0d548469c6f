"""Segment Anything as a geoseg instance model: automatic or prompted, batched over tiles, nodata-aware.

Per batch of tiles:

1. the three ``spec.rgb`` bands are stretched to uint8 with *scene-wide* percentiles (never per tile, so a field
   looks the same in every tile), invalid pixels set to 0;
2. every tile with valid pixels is resized and normalised exactly as ``SamPredictor.set_image`` does, and the image
   encoder runs once on the whole batch (bf16 autocast on CUDA; attention through
   ``F.scaled_dot_product_attention`` with the relative-position bias as an additive mask);
3. each tile is decoded from its slice of the batched embedding:

   - *automatic*: segment-anything's ``SamAutomaticMaskGenerator`` with the spec's parameters, reusing the batched
     embedding for the full-tile crop (deeper crop layers encode their crops), with no point prompts on invalid
     pixels;
   - *prompted*: one mask per prompt from ``TileContext.prompts``, all prompts of a tile decoded together;

4. masks are restricted to valid pixels and painted into one int32 label raster over the read window, the higher
   score winning where masks overlap. ``min_area_m2`` / ``max_area_m2`` are not applied here, to fragments, but
   after stitching, to whole objects (:func:`geoseg.finalize.build_layers`): a large field's small edge fragment is
   kept and joined, and an object too large as a whole is dropped whole.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from segment_anything.modeling import Sam
from segment_anything.modeling.image_encoder import Attention, get_rel_pos
from segment_anything.utils.amg import (
    MaskData,
    batched_mask_to_box,
    calculate_stability_score,
    is_box_near_crop_edge,
    uncrop_masks,
)
from segment_anything.utils.transforms import ResizeLongestSide
from torchvision.ops.boxes import batched_nms

from geoseg.errors import SpecError
from geoseg.models.base import (
    InstanceInfo,
    InstanceOutput,
    Model,
    ModelOutput,
    Prompts,
    SceneInfo,
    TileContext,
)
from geoseg.models.weights import load_sam, resolve_checkpoint
from geoseg.spec import SamSpec


# --------------------------------------------------------------------------------------------- device, precision
def _torch_device(device: str) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpecError("SAM was asked to run on CUDA but torch sees no GPU: set compute.gpus_per_actor: 0")
    return dev


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a spec ``precision`` on ``device``; None means plain fp32."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
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
    with torch.inference_mode(), _autocast(sam.device, dtype):
        features = sam.image_encoder(sam.preprocess(batch))
    return features, (int(resized.shape[1]), int(resized.shape[2]))


# --------------------------------------------------------------------------------------------- decoding helpers
class _TilePredictor(SamPredictor):
    """A SamPredictor that takes a tile's embedding from the batched encoder call and decodes under autocast."""

    def __init__(self, sam: Sam, dtype: torch.dtype | None) -> None:
        super().__init__(sam)
        self.dtype = dtype
        self._tile: tuple[torch.Tensor, tuple[int, int], tuple[int, int]] | None = None

    def use_tile(self, features: torch.Tensor, original_size: tuple[int, int], input_size: tuple[int, int]) -> None:
        """Serve ``features`` (1, C, h, w) whenever the full tile is set as the image."""
        self._tile = (features, original_size, input_size)

    def clear_tile(self) -> None:
        self._tile = None
        self.reset_image()

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        if self._tile is not None and tuple(image.shape[:2]) == self._tile[1]:
            self.reset_image()
            self.features, self.original_size, self.input_size = self._tile
            self.is_image_set = True
            return
        super().set_image(image, image_format)  # a smaller crop of a deeper crop layer

    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]) -> None:
        with _autocast(self.device, self.dtype):
            super().set_torch_image(transformed_image, original_image_size)

    @torch.no_grad()
    def decode_points(self, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Three masks per foreground point (model input frame, (B, 2)): low-res fp32 logits and IoUs."""
        labels = torch.ones((len(coords), 1), dtype=torch.int, device=coords.device)
        with _autocast(self.device, self.dtype):
            sparse, dense = self.model.prompt_encoder(points=(coords[:, None], labels), boxes=None, masks=None)
            low, iou = self.model.mask_decoder(
                image_embeddings=self.features,
                image_pe=self.model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )
        return low.float(), iou.float()  # upsample and threshold in fp32


def points_on_valid(points: np.ndarray, crop_box: Sequence[int], valid: np.ndarray) -> np.ndarray:
    """Which (x, y) points, given in a crop's pixel coordinates, fall on valid pixels of the tile."""
    cols = np.clip(np.floor(points[:, 0] + crop_box[0]).astype(np.int64), 0, valid.shape[1] - 1)
    rows = np.clip(np.floor(points[:, 1] + crop_box[1]).astype(np.int64), 0, valid.shape[0] - 1)
    return valid[rows, cols]


class _TileMaskGenerator(SamAutomaticMaskGenerator):
    """segment-anything's automatic mask generator on one tile of a batch, without prompts on nodata."""

    def __init__(self, predictor: _TilePredictor, spec: SamSpec) -> None:
        super().__init__(
            predictor.model,
            points_per_side=spec.points_per_side,
            points_per_batch=spec.points_per_batch,
            pred_iou_thresh=spec.pred_iou_thresh,
            stability_score_thresh=spec.stability_score_thresh,
            stability_score_offset=spec.stability_score_offset,
            box_nms_thresh=spec.box_nms_thresh,
            crop_n_layers=spec.crop_n_layers,
            crop_nms_thresh=spec.crop_nms_thresh,
            crop_overlap_ratio=spec.crop_overlap_ratio,
            crop_n_points_downscale_factor=spec.crop_n_points_downscale_factor,
            min_mask_region_area=0,  # done by _clean_small_regions, without OpenCV
        )
        self.predictor: _TilePredictor = predictor
        self._valid: np.ndarray | None = None

    def tile_masks(self, image: np.ndarray, valid: np.ndarray) -> MaskData:
        """Masks of one tile (whose embedding the predictor already holds), as segment-anything's MaskData."""
        self._valid = valid
        try:
            return self._generate_masks(image)
        finally:
            self._valid = None

    def _process_batch(
        self, points: np.ndarray, im_size: tuple[int, ...], crop_box: list[int], orig_size: tuple[int, ...]
    ) -> MaskData:
        """segment-anything's ``_process_batch`` (same filters, same order), minus prompts on nodata, with the
        predicted-IoU filter applied before upsampling and the RLE encoded in one device transfer."""
        if self._valid is not None:
            points = points[points_on_valid(points, crop_box, self._valid)]
        predictor, device = self.predictor, self.predictor.device
        if len(points) == 0:
            return _empty_mask_data(device)
        coords = torch.as_tensor(predictor.transform.apply_coords(points, im_size), dtype=torch.float32, device=device)
        low, iou = predictor.decode_points(coords)
        low, iou = low.flatten(0, 1), iou.flatten(0, 1)
        repeated = torch.as_tensor(points.repeat(3, axis=0))
        if self.pred_iou_thresh > 0.0:
            keep = iou > self.pred_iou_thresh
            low, iou, repeated = low[keep], iou[keep], repeated[keep.cpu()]
        threshold = predictor.model.mask_threshold
        logits = predictor.model.postprocess_masks(low[:, None], predictor.input_size, predictor.original_size)[:, 0]
        stability = calculate_stability_score(logits, threshold, self.stability_score_offset)
        if self.stability_score_thresh > 0.0:
            keep = stability >= self.stability_score_thresh
            logits, iou, stability, repeated = logits[keep], iou[keep], stability[keep], repeated[keep.cpu()]
        masks = logits > threshold
        del logits
        boxes = batched_mask_to_box(masks)
        keep = ~is_box_near_crop_edge(boxes, crop_box, [0, 0, orig_size[1], orig_size[0]])
        masks = uncrop_masks(masks[keep], crop_box, orig_size[0], orig_size[1])
        return MaskData(
            iou_preds=iou[keep],
            points=repeated[keep.cpu()],
            stability_score=stability[keep],
            boxes=boxes[keep],
            rles=rle_encode(masks),
        )


def _empty_mask_data(device: torch.device) -> MaskData:
    return MaskData(
        iou_preds=torch.zeros(0, device=device),
        points=torch.zeros((0, 2), dtype=torch.float64),
        stability_score=torch.zeros(0, device=device),
        boxes=torch.zeros((0, 4), dtype=torch.int64, device=device),
        rles=[],
    )


def rle_encode(masks: torch.Tensor) -> list[dict[str, Any]]:
    """Bool (K, H, W) masks -> segment-anything's uncompressed column-major RLEs (counts as int64 arrays).

    Same result as ``mask_to_rle_pytorch`` with one device-to-host transfer instead of one per mask.
    """
    k, h, w = masks.shape
    flat = masks.permute(0, 2, 1).flatten(1)
    changes = (flat[:, 1:] ^ flat[:, :-1]).nonzero().cpu().numpy()
    starts = flat[:, 0].cpu().numpy()
    bounds = np.searchsorted(changes[:, 0], np.arange(k + 1))
    rles = []
    for i in range(k):
        edges = np.concatenate([[0], changes[bounds[i] : bounds[i + 1], 1] + 1, [h * w]])
        counts = np.diff(edges)
        rles.append({"size": [h, w], "counts": np.concatenate([[0], counts]) if starts[i] else counts})
    return rles


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """segment-anything's uncompressed (column-major) RLE -> bool (H, W) mask, vectorised."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], np.int64)
    values = (np.arange(len(counts)) % 2).astype(bool)
    return np.repeat(values, counts).reshape(w, h).T


def _remove_small_regions(mask: np.ndarray, min_area: int, holes: bool) -> tuple[np.ndarray, bool]:
    """Fill holes (or drop islands) smaller than ``min_area`` pixels, 8-connected; returns (mask, changed)."""
    labels, count = ndimage.label(~mask if holes else mask, structure=np.ones((3, 3), bool))
    if count == 0:
        return mask, False
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    small = np.flatnonzero(sizes < min_area) + 1
    if small.size == 0:
        return mask, False
    if holes:
        return mask | np.isin(labels, small), True
    keep = np.setdiff1d(np.arange(1, count + 1), small)
    if keep.size == 0:
        keep = np.array([int(np.argmax(sizes)) + 1])
    return np.isin(labels, keep), True


def _box(mask: np.ndarray) -> list[float]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(cols[0]), float(rows[0]), float(cols[-1]), float(rows[-1])]


def _clean_small_regions(
    masks: list[np.ndarray], min_area: int, nms_thresh: float
) -> tuple[list[np.ndarray], np.ndarray]:
    """segment-anything's small-region post-processing: clean each mask, then NMS preferring untouched masks."""
    cleaned, unchanged = [], []
    for mask in masks:
        mask, filled = _remove_small_regions(mask, min_area, holes=True)
        mask, dropped = _remove_small_regions(mask, min_area, holes=False)
        cleaned.append(mask)
        unchanged.append(float(not (filled or dropped)))
    keep = batched_nms(
        torch.tensor([_box(m) for m in cleaned]),
        torch.tensor(unchanged),
        torch.zeros(len(cleaned)),
        iou_threshold=nms_thresh,
    ).numpy()
    return [cleaned[i] for i in keep], keep


# --------------------------------------------------------------------------------------------- painting
@dataclass
class MaskCandidate:
    """One predicted mask over a tile's read window, before overlaps are resolved."""

    mask: np.ndarray
    """bool (H, W)."""
    score: float
    """Predicted IoU."""
    stability: float | None = None
    key: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


def paint_by_score(
    candidates: Sequence[MaskCandidate], valid: np.ndarray, min_px: float = 0.0, max_px: float | None = None
) -> InstanceOutput:
    """Paint masks into one int32 label raster; where masks overlap the higher score wins.

    A mask is restricted to valid pixels and kept if its area is within [min_px, max_px] and at least
    ``max(1, min_px)`` of its pixels are still free after the higher-scoring masks. Labels are 1..K in
    descending score order.
    """
    labels = np.zeros(valid.shape, np.int32)
    infos: list[InstanceInfo] = []
    floor = max(1.0, min_px)
    for cand in sorted(candidates, key=lambda c: -c.score):
        mask = cand.mask & valid
        area = int(np.count_nonzero(mask))
        if area < floor or (max_px is not None and area > max_px):
            continue
        free = mask & (labels == 0)
        if np.count_nonzero(free) < floor:
            continue
        label = len(infos) + 1
        labels[free] = label
        score = float(np.clip(cand.score, 0.0, 1.0))
        infos.append(InstanceInfo(label, score, cand.stability, cand.key, dict(cand.attrs)))
    return InstanceOutput(labels, infos)


# --------------------------------------------------------------------------------------------- the model
class SamModel(Model):
    """Segment Anything on batches of tiles (see the module docstring)."""

    kind = "instance"

    def __init__(self, spec: SamSpec, scene: SceneInfo, sam: Sam, dtype: torch.dtype | None = None) -> None:
        if scene.pixel_area_m2 <= 0:
            raise ValueError(f"SceneInfo.pixel_area_m2 must be positive, got {scene.pixel_area_m2}")
        self.spec = spec
        self.name = spec.name
        self.bands = tuple(spec.rgb)
        self.merge_min_agreement = spec.merge_min_agreement
        self.needs_prompts = spec.mode == "prompted"
        self.sam = sam
        self.dtype = dtype
        self.lows, self.highs = stretch_limits(scene, self.bands, spec.stretch_percentiles)
        self._predictor = _TilePredictor(sam, dtype)
        self._generator = _TileMaskGenerator(self._predictor, spec) if spec.mode == "automatic" else None

    def to_uint8(self, pixels: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """The encoder's (N, H, W, 3) uint8 view of a batch, stretched with the scene-wide limits."""
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"SAM expects pixels of shape (N, 3, H, W) in {self.bands} order, got {pixels.shape}")
        return stretch_to_uint8(pixels, valid, self.lows, self.highs)

    @torch.inference_mode()
    def predict(self, pixels: np.ndarray, valid: np.ndarray, contexts: list[TileContext]) -> list[ModelOutput]:
        images = self.to_uint8(pixels, valid)
        outputs: list[ModelOutput] = [InstanceOutput(np.zeros(valid.shape[1:], np.int32)) for _ in images]
        active = [i for i, ctx in enumerate(contexts) if self._has_work(valid[i], ctx)]
        if not active:
            return outputs
        features, input_size = encode_tiles(self.sam, images[active], self.dtype)
        for j, i in enumerate(active):
            tile_features = features[j : j + 1]
            if self._generator is not None:
                candidates = self._automatic(self._generator, images[i], valid[i], tile_features, input_size)
            else:
                prompts = contexts[i].prompts or Prompts()
                candidates = self._prompted(valid.shape[1:], tile_features, input_size, prompts)
            outputs[i] = paint_by_score(candidates, valid[i])
        return outputs

    def _has_work(self, valid: np.ndarray, context: TileContext) -> bool:
        if not valid.any():
            return False
        return not self.needs_prompts or (context.prompts is not None and len(context.prompts) > 0)

    def _automatic(
        self,
        generator: _TileMaskGenerator,
        image: np.ndarray,
        valid: np.ndarray,
        features: torch.Tensor,
        input_size: tuple[int, int],
    ) -> list[MaskCandidate]:
        self._predictor.use_tile(features, (image.shape[0], image.shape[1]), input_size)
        try:
            data = generator.tile_masks(image, valid)
        finally:
            self._predictor.clear_tile()
        masks = [rle_decode(rle) for rle in data["rles"]]
        scores, stability = np.asarray(data["iou_preds"]), np.asarray(data["stability_score"])
        if self.spec.min_mask_region_area > 0 and masks:
            nms = max(self.spec.box_nms_thresh, self.spec.crop_nms_thresh)
            masks, keep = _clean_small_regions(masks, self.spec.min_mask_region_area, nms)
            scores, stability = scores[keep], stability[keep]
        return [MaskCandidate(m, float(s), float(t)) for m, s, t in zip(masks, scores, stability, strict=True)]

    def _prompt_tokens(self, prompts: Prompts, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse embeddings of all prompts of a tile, points then boxes (two tokens each), and the dense one."""
        transform, encoder, device = self._predictor.transform, self.sam.prompt_encoder, self.sam.device
        sparse: list[torch.Tensor] = []
        dense: torch.Tensor | None = None
        # Prompts are continuous pixel coordinates (pixel (r, c) spans [c, c+1) x [r, r+1)); SAM's prompt
        # encoder adds 0.5 to integer pixel indices, hence the shift.
        if len(prompts.points):
            coords = transform.apply_coords(np.asarray(prompts.points, float) - 0.5, size)
            coords_t = torch.as_tensor(coords, dtype=torch.float32, device=device)[:, None, :]
            labels_t = torch.ones((len(coords), 1), dtype=torch.int, device=device)
            tokens, dense = encoder(points=(coords_t, labels_t), boxes=None, masks=None)
            sparse.append(tokens)
        if len(prompts.boxes):
            boxes = transform.apply_boxes(np.asarray(prompts.boxes, float) - 0.5, size)
            tokens, dense = encoder(
                points=None, boxes=torch.as_tensor(boxes, dtype=torch.float32, device=device), masks=None
            )
            sparse.append(tokens)
        if dense is None:
            raise ValueError("a tile with no prompts has nothing to decode")
        return torch.cat(sparse), dense[:1]

    def _prompted(
        self, size: tuple[int, int], features: torch.Tensor, input_size: tuple[int, int], prompts: Prompts
    ) -> list[MaskCandidate]:
        keys = [*prompts.point_keys, *prompts.box_keys]
        is_box = torch.tensor([False] * len(prompts.points) + [True] * len(prompts.boxes), device=self.sam.device)
        candidates: list[MaskCandidate] = []
        with _autocast(self.sam.device, self.dtype):
            sparse, dense = self._prompt_tokens(prompts, size)
        for start in range(0, len(keys), self.spec.points_per_batch):
            chunk = slice(start, start + self.spec.points_per_batch)
            logits, scores = self._decode(features, sparse[chunk], dense, is_box[chunk], input_size, size)
            stability = calculate_stability_score(logits, self.sam.mask_threshold, self.spec.stability_score_offset)
            masks = (logits > self.sam.mask_threshold).cpu().numpy()
            for mask, score, stab, key in zip(masks, scores.tolist(), stability.tolist(), keys[chunk], strict=True):
                candidates.append(MaskCandidate(mask, score, stab, key, prompts.attrs.get(key, {})))
        return candidates

    def _decode(
        self,
        features: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        is_box: torch.Tensor,
        input_size: tuple[int, int],
        size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One mask decoder call for a chunk of prompts: the best multimask output for a point, the single
        output for a box. Returns (K, H, W) fp32 logits over the tile and (K,) predicted IoUs."""
        n = len(sparse)
        with _autocast(self.sam.device, self.dtype):
            low, iou = self.sam.mask_decoder.predict_masks(
                image_embeddings=features,
                image_pe=self.sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense.expand(n, -1, -1, -1),
            )
        low, iou = low.float(), iou.float()
        pick = torch.where(is_box, torch.zeros_like(is_box, dtype=torch.long), iou[:, 1:].argmax(1) + 1)
        rows = torch.arange(n, device=low.device)
        logits = self.sam.postprocess_masks(low[rows, pick][:, None], input_size, size)[:, 0]
        return logits, iou[rows, pick]


def build_sam(spec: SamSpec, scene: SceneInfo, device: str = "cpu") -> SamModel:
    """Load the spec's SAM (local checkpoint or verified cache, never the network) as a geoseg model.

    Raises:
        SpecError: ``rgb`` names bands the inputs lack, unknown variant, or CUDA asked for but absent.
        WeightsError: weights missing from the cache, corrupt, or of another variant.
    """
    missing = [band for band in spec.rgb if band not in scene.band_names]
    if missing:
        raise SpecError(
            f"sam model {spec.name!r}: rgb names {missing} but the inputs have {list(scene.band_names)}: "
            f"set `rgb:` to three of them"
        )
    dev = _torch_device(device)
    path = resolve_checkpoint(spec.variant, spec.checkpoint)
    sam = enable_sdpa(load_sam(spec.variant, path, str(dev)))
    return SamModel(spec, scene, sam, autocast_dtype(spec.precision, dev))
