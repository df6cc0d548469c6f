"""A tiny SAM variant for tests: the same builder, checkpoint format and loader as vit_h/l/b, seconds on a CPU.

``write_tiny_checkpoint(path)`` registers the ``vit_tiny`` variant and saves a randomly initialised
``state_dict`` with ``torch.save``; ``load_sam("vit_tiny", path)`` then goes through exactly the code path of
the official checkpoints. Random weights give arbitrary masks: test structure and invariants, not quality.
"""

from __future__ import annotations

from pathlib import Path

from geoseg.models.sam.variants import SamConfig, register_variant
from geoseg.models.sam.weights import build_sam_model

TINY_VARIANT = "vit_tiny"

TINY_CONFIG = SamConfig(
    embed_dim=32,
    depth=2,
    num_heads=2,
    global_attn_indexes=(1,),
    image_size=128,
    patch_size=16,
    window_size=4,
    prompt_embed_dim=32,
    decoder_mlp_dim=64,
    decoder_num_heads=2,
    mask_in_chans=8,
    iou_head_hidden_dim=32,
)
"""8x8 embedding grid: block 0 attends in 4x4 windows, block 1 globally (both paths of the real encoder)."""


def register_tiny_sam() -> str:
    """Register ``vit_tiny`` in the variant table (idempotent); returns its name."""
    register_variant(TINY_VARIANT, TINY_CONFIG)
    return TINY_VARIANT


def write_tiny_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """Write a randomly initialised ``vit_tiny`` state_dict to ``path``.

    The relative and absolute position embeddings, zero-initialised in segment-anything, get small random
    values so that every term of the attention is exercised.
    """
    import torch

    register_tiny_sam()
    torch.manual_seed(seed)
    model = build_sam_model(TINY_CONFIG)
    with torch.no_grad():
        for name, param in model.image_encoder.named_parameters():
            if "rel_pos" in name or name == "pos_embed":
                param.normal_(0.0, 0.1)
    path = Path(path)
    torch.save(model.state_dict(), path)
    return path
