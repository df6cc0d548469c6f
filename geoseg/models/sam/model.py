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
   after stitching, to whole objects (:func:`geoseg.export.layers.layer_frames`): a large field's small edge fragment is
   kept and joined, and an object too large as a whole is dropped whole.
"""

from __future__ import annotations

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.amg import (
    calculate_stability_score,
)

from geoseg.errors import SpecError
from geoseg.models.base import (
    InstanceOutput,
    Model,
    ModelOutput,
    Prompts,
    SceneInfo,
    TileContext,
)
from geoseg.models.checkpoints import resolve_checkpoint
from geoseg.models.sam.encoder import (
    autocast_dtype,
    enable_sdpa,
    encode_tiles,
    precision_autocast,
    stretch_limits,
    stretch_to_uint8,
    torch_device,
)
from geoseg.models.sam.masks import (
    MaskCandidate,
    TileMaskGenerator,
    TilePredictor,
    clean_small_regions,
    paint_by_score,
    rle_decode,
)
from geoseg.models.sam.weights import load_sam
from geoseg.spec.job import SamSpec

__all__ = ["SamModel", "build_sam"]


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
        self._predictor = TilePredictor(sam, dtype)
        self._generator = TileMaskGenerator(self._predictor, spec) if spec.mode == "automatic" else None

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
        generator: TileMaskGenerator,
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
            masks, keep = clean_small_regions(masks, self.spec.min_mask_region_area, nms)
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
        with precision_autocast(self.sam.device, self.dtype):
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
        with precision_autocast(self.sam.device, self.dtype):
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
    dev = torch_device(device)
    path = resolve_checkpoint(spec.variant, spec.checkpoint)
    sam = enable_sdpa(load_sam(spec.variant, path, str(dev)))
    return SamModel(spec, scene, sam, autocast_dtype(spec.precision, dev))
