"""The ``delineate_anything`` model: YOLO11-seg field instances with scores on a batch of tiles.

Input: the spec's ``rgb`` bands times ``input_scale``, clipped to [0, 1] (the publisher's Sentinel-2 input is
DN / 3000 clipped), invalid pixels 0, zero-padded bottom/right to a multiple of 32 and the masks cropped back. The
net answers boxes, scores and mask coefficients; ultralytics' own non-maximum suppression and mask assembly
(``non_max_suppression``, ``process_mask``) give one mask per field, painted in ascending score so the higher score
wins where two overlap. A tile reads ``halo_px`` (default 64) around its core: a field is seen whole by the tile
that owns it when it reaches at most that far past the core; larger ones are joined by the stitcher's edge agreement.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from geoseg.models.base import InstanceInfo, InstanceOutput, Model, ModelOutput, SceneInfo, TileContext
from geoseg.models.checkpoints import resolve_family
from geoseg.models.delineate_anything.network import load_da_net
from geoseg.models.delineate_anything.variants import da_variant
from geoseg.spec.models import DelineateAnythingSpec

_STRIDE = 32


def _autocast(device: torch.device, precision: str) -> Any:
    use = device.type == "cuda" and precision != "fp32"
    return torch.autocast("cuda", dtype=torch.bfloat16) if use else nullcontext()


def paint(masks: np.ndarray, scores: np.ndarray, valid: np.ndarray) -> InstanceOutput:
    """One label raster from (n, H, W) masks: ascending score, so the higher score wins; invalid pixels stay 0."""
    labels = np.zeros(valid.shape, np.int32)
    infos = []
    for rank, i in enumerate(np.argsort(scores, kind="stable")):
        pixels = masks[i].astype(bool) & valid
        if pixels.any():
            labels[pixels] = rank + 1
            infos.append(InstanceInfo(rank + 1, float(scores[i])))
    present = set(np.unique(labels).tolist())
    return InstanceOutput(labels, [info for info in infos if info.label in present])


class DelineateAnythingModel(Model):
    """Field instances with scores from a Delineate Anything net."""

    kind = "instance"

    def __init__(self, spec: DelineateAnythingSpec, device: str = "cpu") -> None:
        self.spec, self.name = spec, spec.name
        self.bands = tuple(spec.rgb)
        self.merge_min_agreement = spec.merge_min_agreement
        self.device = torch.device(device)
        variant = da_variant(spec.variant)
        self.net = load_da_net(resolve_family("delineate_anything", spec.variant, spec.checkpoint), variant)
        self.net.to(self.device)

    @torch.inference_mode()
    def predict(self, pixels: np.ndarray, valid: np.ndarray, contexts: list[TileContext]) -> list[ModelOutput]:
        from ultralytics.utils.nms import non_max_suppression
        from ultralytics.utils.ops import process_mask

        x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).to(self.device)
        mask = torch.from_numpy(np.ascontiguousarray(valid, dtype=bool)).to(self.device)
        x = torch.where(mask[:, None], (x * self.spec.input_scale).clamp(0, 1), torch.zeros_like(x))
        height, width = x.shape[-2:]
        x = F.pad(x, (0, -width % _STRIDE, 0, -height % _STRIDE))
        with _autocast(self.device, self.spec.precision):
            (preds, protos), _ = self.net(x)
        dets = non_max_suppression(
            preds.float(), self.spec.confidence, self.spec.iou, nc=1, max_det=self.spec.max_detections
        )
        outputs: list[ModelOutput] = []
        for i, det in enumerate(dets):
            found = process_mask(protos[i].float(), det[:, 6:], det[:, :4], tuple(x.shape[-2:]), upsample=True)
            found = found[:, :height, :width].cpu().numpy()
            outputs.append(paint(found, det[:, 4].cpu().numpy(), valid[i]))
        return outputs


def build_delineate_anything(spec: DelineateAnythingSpec, scene: SceneInfo, device: str) -> Model:
    """Builder used by the model table."""
    return DelineateAnythingModel(spec, device)
