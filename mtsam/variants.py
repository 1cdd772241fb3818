"""Registry of SAM variants: builder functions (as in segment-anything's ``sam_model_registry``).

Each builder returns a plain ``segment_anything.modeling.Sam`` at the requested image size, so a
checkpoint of any variant is a ``Sam.state_dict()`` — official ``.pth`` files and the tiny test
checkpoints alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from .errors import ConfigError

PATCH_SIZE = 16
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class VariantSpec:
    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    prompt_embed_dim: int = 256  # neck output = decoder transformer width
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    iou_head_hidden_dim: int = 256
    image_size: int = 1024  # size the official weights were trained at


VARIANTS: dict[str, VariantSpec] = {
    "vit_h": VariantSpec(1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": VariantSpec(1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": VariantSpec(768, 12, 12, (2, 5, 8, 11)),
    # Small variants for tests, CPU demos and benchmarks (same classes, fewer/narrower blocks).
    "tiny": VariantSpec(96, 2, 3, (1,), 4, 64, 256, 4, 64, 128),
    "small": VariantSpec(192, 4, 6, (1, 3), 8, 128, 512, 8, 128, 256),
    "vit_b_short": VariantSpec(768, 4, 12, (1, 3), 14, 256, 2048, 8, 256, 256),
}


def variant_spec(variant: str) -> VariantSpec:
    if variant not in VARIANTS:
        raise ConfigError(f"model.variant: unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
    return VARIANTS[variant]


def check_image_size(image_size: int) -> int:
    if image_size <= 0 or image_size % PATCH_SIZE:
        raise ConfigError(f"model.image_size: must be a positive multiple of {PATCH_SIZE}, got {image_size}")
    return image_size


def build_sam(variant: str, image_size: int | None = None) -> Sam:
    """A randomly initialised SAM of ``variant`` whose encoder takes ``image_size``² inputs."""
    spec = variant_spec(variant)
    size = check_image_size(image_size or spec.image_size)
    grid = size // PATCH_SIZE
    dim = spec.prompt_embed_dim
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=spec.depth,
            embed_dim=spec.embed_dim,
            img_size=size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=spec.num_heads,
            patch_size=PATCH_SIZE,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=spec.global_attn_indexes,
            window_size=spec.window_size,
            out_chans=dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim, image_embedding_size=(grid, grid), input_image_size=(size, size), mask_in_chans=16
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=dim, mlp_dim=spec.decoder_mlp_dim, num_heads=spec.decoder_heads
            ),
            transformer_dim=dim,
            iou_head_depth=3,
            iou_head_hidden_dim=spec.iou_head_hidden_dim,
        ),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    )


def _builder(variant: str):
    def build(checkpoint: str | None = None, image_size: int | None = None) -> Sam:
        from .sam_checkpoint import load_sam_weights  # local: avoids an import cycle

        sam = build_sam(variant, image_size)
        if checkpoint is not None:
            load_sam_weights(sam, checkpoint, variant)
        return sam

    build.__name__ = f"build_sam_{variant}"
    return build


# segment-anything style registry: variant name -> builder(checkpoint=None, image_size=None).
sam_registry = {name: _builder(name) for name in VARIANTS}
