"""SAM variants: the architecture of each (segment-anything's ``_build_sam`` arguments), a pure-Python table.

Planning checks a spec's ``variant`` here without torch; test code registers tiny variants with
:func:`register_variant`.
"""

from __future__ import annotations

from dataclasses import dataclass

from geoseg.errors import SpecError


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
