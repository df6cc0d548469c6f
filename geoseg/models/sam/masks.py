"""SAM's mask side, per tile: decoding from a batched embedding, automatic masks without prompts on nodata,
segment-anything's RLE and small-region cleaning, and painting masks into one label raster by score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from segment_anything.modeling import Sam
from segment_anything.utils.amg import (
    MaskData,
    batched_mask_to_box,
    calculate_stability_score,
    is_box_near_crop_edge,
    uncrop_masks,
)
from torchvision.ops.boxes import batched_nms

from geoseg.models.base import (
    InstanceInfo,
    InstanceOutput,
)
from geoseg.models.sam.encoder import precision_autocast
from geoseg.spec.job import SamSpec


# --------------------------------------------------------------------------------------------- decoding helpers
class TilePredictor(SamPredictor):
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
        with precision_autocast(self.device, self.dtype):
            super().set_torch_image(transformed_image, original_image_size)

    @torch.no_grad()
    def decode_points(self, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Three masks per foreground point (model input frame, (B, 2)): low-res fp32 logits and IoUs."""
        labels = torch.ones((len(coords), 1), dtype=torch.int, device=coords.device)
        with precision_autocast(self.device, self.dtype):
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


class TileMaskGenerator(SamAutomaticMaskGenerator):
    """segment-anything's automatic mask generator on one tile of a batch, without prompts on nodata."""

    def __init__(self, predictor: TilePredictor, spec: SamSpec) -> None:
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
            min_mask_region_area=0,  # done by clean_small_regions, without OpenCV
        )
        self.predictor: TilePredictor = predictor
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


def clean_small_regions(
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
