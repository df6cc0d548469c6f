"""The ``ftw`` model: a Fields of The World U-Net on a batch of tiles, giving field instances or classes.

Input: the spec's windows (red, green, blue, NIR each) stacked in order, times ``input_scale`` (FTW's DN / 3000),
invalid pixels 0; zero-padded bottom/right to a multiple of 32 (the encoder's stride) and cropped back. A tile reads
``halo_px`` (default 64, what FTW's own inference discards per side) of context around its core. Output: field
instances (:mod:`geoseg.models.ftw.instances`) scored by their mean field probability, or (``output: classes``) the
classes background / field / boundary with their probabilities, which tiles blend like the U-Net's.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from geoseg.models.base import (
    InstanceInfo,
    InstanceOutput,
    Model,
    ModelOutput,
    SceneInfo,
    TileContext,
)
from geoseg.models.checkpoints import resolve_family
from geoseg.models.ftw.instances import field_instances, mean_per_label
from geoseg.models.ftw.network import load_ftw_net
from geoseg.models.ftw.variants import ftw_bands, ftw_classes, ftw_variant
from geoseg.models.semantic import semantic_outputs
from geoseg.spec.pretrained import FtwSpec

_STRIDE = 32


def autocast(device: torch.device, precision: str) -> Any:
    """bf16 autocast on CUDA (``auto`` or ``bf16``), nothing (fp32) otherwise."""
    use = device.type == "cuda" and precision != "fp32"
    return torch.autocast("cuda", dtype=torch.bfloat16) if use else nullcontext()


class _FtwBase(Model):
    """What both outputs share: the net and its probabilities."""

    def __init__(self, spec: FtwSpec, device: str = "cpu") -> None:
        self.spec, self.name = spec, spec.name
        self.variant = ftw_variant(spec.variant)
        self.device = torch.device(device)
        self.net = load_ftw_net(resolve_family("ftw", spec.variant, spec.checkpoint), self.variant).to(self.device)
        self.bands = ftw_bands(spec)
        self.channels = [self.bands.index(band) for window in spec.windows for band in window]
        self.merge_min_agreement = spec.merge_min_agreement

    @torch.inference_mode()
    def probabilities(self, pixels: np.ndarray, valid: np.ndarray) -> torch.Tensor:
        """float32 (N, K, H, W) class probabilities, 0 where invalid."""
        x = torch.from_numpy(np.ascontiguousarray(pixels[:, self.channels], dtype=np.float32)).to(self.device)
        mask = torch.from_numpy(np.ascontiguousarray(valid, dtype=bool)).to(self.device)
        x = torch.where(mask[:, None], x * self.spec.input_scale, torch.zeros_like(x))
        height, width = x.shape[-2:]
        x = F.pad(x, (0, -width % _STRIDE, 0, -height % _STRIDE))
        with autocast(self.device, self.spec.precision):
            logits = self.net(x)[..., :height, :width]
        probs = torch.softmax(logits.float(), dim=1)
        return torch.where(mask[:, None], probs, torch.zeros_like(probs))


class FtwFieldsModel(_FtwBase):
    """Field instances, one label each, scored by their mean field probability."""

    kind = "instance"

    def predict(self, pixels: np.ndarray, valid: np.ndarray, contexts: list[TileContext]) -> list[ModelOutput]:
        probs = self.probabilities(pixels, valid)
        classes = probs.argmax(dim=1).to(torch.uint8).cpu().numpy()
        field_prob = probs[:, 1].cpu().numpy()
        outputs: list[ModelOutput] = []
        for i in range(len(contexts)):
            labels, count = field_instances(classes[i], valid[i], self.spec.boundary_px, self.spec.min_field_px)
            scores = mean_per_label(labels, field_prob[i], count)
            infos = [InstanceInfo(label, float(scores[label])) for label in range(1, count + 1)]
            outputs.append(InstanceOutput(labels, infos))
        return outputs


class FtwClassesModel(_FtwBase):
    """FTW's classes (background, field[, boundary]) and their probabilities per pixel."""

    kind = "semantic"

    def __init__(self, spec: FtwSpec, device: str = "cpu") -> None:
        super().__init__(spec, device)
        self.classes = ftw_classes(self.variant)

    def predict(self, pixels: np.ndarray, valid: np.ndarray, contexts: list[TileContext]) -> list[ModelOutput]:
        return semantic_outputs(self.probabilities(pixels, valid), valid)


def build_ftw(spec: FtwSpec, scene: SceneInfo, device: str) -> Model:
    """Builder used by the model table."""
    return FtwClassesModel(spec, device) if spec.output == "classes" else FtwFieldsModel(spec, device)
