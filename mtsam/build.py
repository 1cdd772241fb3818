"""``build_mtsam``: SAM variant (+ optional official checkpoint) → adapters → MTSAM."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .adapters import TaskRouting, inject_adapters, parse_adapter_config
from .errors import ConfigError
from .model import MTSAM
from .variants import build_sam, check_image_size, sam_registry, variant_spec


def _check_tasks(tasks: Mapping[str, int]) -> dict[str, int]:
    if not tasks:
        raise ConfigError("tasks: at least one task is required")
    out = {}
    for name, channels in tasks.items():
        if not isinstance(channels, int) or channels <= 0:
            raise ConfigError(f"tasks.{name}: output channels must be a positive integer, got {channels!r}")
        out[str(name)] = channels
    return out


def build_mtsam(
    variant: str,
    tasks: Mapping[str, int],
    adapter: Any = None,
    checkpoint: str | Path | None = None,
    image_size: int | None = None,
    normalize: str = "sam",
    heads: Mapping[str, str] | None = None,
    seed: int = 0,
    no_mask_jitter: float = 0.0,
    train_neck_norms: bool = True,
) -> MTSAM:
    """Build an MTSAM model.

    Args:
        variant: a key of ``mtsam.variants.VARIANTS`` (vit_b / vit_l / vit_h / tiny / small / ...).
        tasks: task name → output channels, e.g. {"semantic": 13, "depth": 1, "normal": 3}.
        adapter: adapter config object or dict ({"type": "tora", "ranks": [32, 32, 4]}, "lora",
            "shared_lora", "none"); None means no adapter.
        checkpoint: official SAM ``.pth`` (or any ``Sam.state_dict()``) of this variant; None keeps
            the random init of ``seed`` (reproducible, so adapter checkpoints still reload exactly).
        image_size: encoder input size; defaults to the variant's. Checkpoint pos-embeddings are
            interpolated when it differs.
        no_mask_jitter: break the symmetry of the per-channel no-mask rows with seeded noise of
            this relative std (0 = the paper: every row a copy of SAM's vector).
        train_neck_norms: train the encoder neck's two LayerNorm2d with the other encoder norms
            (ours); False is the reference's trainable set (docs/REFERENCE.md).
    """
    spec = variant_spec(variant)
    tasks = _check_tasks(tasks)
    config = parse_adapter_config(adapter)
    size = check_image_size(image_size or spec.image_size)
    if checkpoint is not None:
        checkpoint = Path(checkpoint).expanduser().resolve()
    # The random init (frozen weights when there is no checkpoint, and the adapter factors) is
    # drawn from a private generator so building never disturbs the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = sam_registry[variant](None, size) if checkpoint is None else build_sam(variant, size)
        if checkpoint is not None:
            from .sam_checkpoint import load_sam_weights

            load_sam_weights(sam, checkpoint, variant)
        routing = TaskRouting()
        inject_adapters(sam.image_encoder, config, len(tasks), routing)
    model = MTSAM(
        image_encoder=sam.image_encoder,
        pe_layer=sam.prompt_encoder.pe_layer,
        no_mask_embed=sam.prompt_encoder.no_mask_embed.weight[0],
        decoder=sam.mask_decoder,
        tasks=tasks,
        heads=heads,
        normalize=normalize,
        routing=routing,
        freeze_prefix_norms=config.freeze_prefix_norms,
        no_mask_jitter=no_mask_jitter,
        jitter_seed=seed,
        train_neck_norms=train_neck_norms,
    )
    model.build_config = {
        "variant": variant,
        "tasks": dict(tasks),
        "adapter": config.model_dump(mode="json"),
        "checkpoint": str(checkpoint) if checkpoint else None,
        "image_size": size,
        "normalize": normalize,
        "heads": dict(model.heads),
        "seed": seed,
        "no_mask_jitter": no_mask_jitter,
        "train_neck_norms": train_neck_norms,
    }
    return model


def build_from_config(config: Mapping[str, Any], checkpoint: str | Path | None = None) -> MTSAM:
    """Rebuild a model from its ``build_config`` (optionally pointing at a moved SAM checkpoint)."""
    kwargs = dict(config)
    if checkpoint is not None:
        kwargs["checkpoint"] = checkpoint
    return build_mtsam(**kwargs)
