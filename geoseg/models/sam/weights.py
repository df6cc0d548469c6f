"""SAM weights into a model: build any variant's architecture, load a verified ``state_dict`` into it.

torch and segment-anything are imported by these functions only, so importing this module stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg.errors import WeightsError, error_gist
from geoseg.models.checkpoints import CHECKPOINTS
from geoseg.models.sam.variants import VARIANTS, SamConfig, variant_config

if TYPE_CHECKING:
    from segment_anything.modeling import Sam


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
