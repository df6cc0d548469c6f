"""Class probabilities -> the semantic output every per-pixel classifier gives (U-Net, FTW classes)."""

from __future__ import annotations

import numpy as np
import torch

from geoseg.models.base import ModelOutput, SemanticOutput


def semantic_outputs(probs: torch.Tensor, valid: np.ndarray) -> list[ModelOutput]:
    """One output per tile: classes 1..K by the largest probability (0 where invalid), the probabilities as scores.

    Args:
        probs: (tiles, classes, rows, cols) probabilities.
        valid: (tiles, rows, cols) valid pixels.
    """
    classes = (probs.argmax(dim=1) + 1).to(torch.uint8).cpu().numpy()
    classes[~valid] = 0
    scores = probs.to(torch.float16).cpu().numpy()
    return [SemanticOutput(classes[i], scores=scores[i]) for i in range(len(classes))]
