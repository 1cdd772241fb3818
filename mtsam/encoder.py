"""MTSAM's encoder pass: a shared trunk per image, task branches, activation checkpointing.

SAM's ``ImageEncoderViT.forward`` runs whatever batch it gets through every block, so a multi-task
forward used to stack the images T times (task-major) from the first block on. But a block with no
task-specific parameters computes the same tokens for every task. ``run_encoder`` therefore runs
each image once through the leading blocks without task-specific adapters (the trunk) and repeats
the tokens T times, task-major, at the first block that has them (the branch point). An encoder
without any (adapter ``none`` or ``shared_lora``) never branches: all tasks share one embedding.

Leading blocks with nothing trainable in or before them (``adapter.freeze_prefix_norms``) run under
``torch.no_grad``: no graph, nothing saved for backward. With checkpointing on, every other block
is a ``torch.utils.checkpoint`` segment (non-reentrant, RNG state preserved, so dropout draws the
same masks on recomputation): only its input is kept, its insides are recomputed in backward.

The frozen SAM weights and module names are untouched (checkpoints load as before).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .adapters import AdaptedLinear, TaskRouting, is_task_specific


def branch_point(encoder: nn.Module) -> int | None:
    """Index of the first block with task-specific adapters (None: the encoder is task-agnostic)."""
    for i, block in enumerate(encoder.blocks):
        if any(is_task_specific(m) for m in block.modules()):
            return i
    return None


def first_adapted_block(encoder: nn.Module) -> int:
    """Index of the first block with any adapter (the depth when there is none)."""
    for i, block in enumerate(encoder.blocks):
        if any(isinstance(m, AdaptedLinear) for m in block.modules()):
            return i
    return len(encoder.blocks)


def frozen_prefix(encoder: nn.Module) -> int:
    """Number of leading blocks with nothing trainable in them, the patch embedding or pos_embed."""
    stem = list(encoder.patch_embed.parameters())
    if encoder.pos_embed is not None:
        stem.append(encoder.pos_embed)
    if any(p.requires_grad for p in stem):
        return 0
    for i, block in enumerate(encoder.blocks):
        if any(p.requires_grad for p in block.parameters()):
            return i
    return len(encoder.blocks)


def _routed(block: nn.Module, routing: TaskRouting, index, tokens: torch.Tensor) -> torch.Tensor:
    # Sets the task index for exactly this block's call, so a checkpointed block recomputed during
    # backward (after the forward has cleared the routing) still routes its samples right.
    previous, routing.index = routing.index, index
    try:
        return block(tokens)
    finally:
        routing.index = previous


def run_encoder(
    encoder: nn.Module,
    images: torch.Tensor,
    routing: TaskRouting,
    index: torch.Tensor | int,
    copies: int = 1,
    activation_checkpointing: bool = False,
) -> torch.Tensor:
    """Preprocessed images (B, 3, S, S) → embeddings (copies, B, C, h, w).

    ``index`` routes the task-specific blocks: an int (every sample the same task) or one entry
    per row of the task-major stack of ``copies`` × B (``copies`` = the number of tasks).
    """
    batch = images.shape[0]
    split = branch_point(encoder)
    graph_free = 0 if images.requires_grad else frozen_prefix(encoder)
    grad = torch.is_grad_enabled()
    with torch.no_grad() if graph_free else contextlib.nullcontext():
        tokens = encoder.patch_embed(images)
        if encoder.pos_embed is not None:
            tokens = tokens + encoder.pos_embed
    branched = False
    for i, block in enumerate(encoder.blocks):
        if i == split:
            tokens, branched = tokens.repeat(copies, 1, 1, 1), True
        block_index = index if branched else None
        if i < graph_free:
            with torch.no_grad():
                tokens = _routed(block, routing, block_index, tokens)
        elif activation_checkpointing and grad:
            tokens = checkpoint(_routed, block, routing, block_index, tokens, use_reentrant=False)
        else:
            tokens = _routed(block, routing, block_index, tokens)
    emb = encoder.neck(tokens.permute(0, 3, 1, 2))
    if not branched:  # task-agnostic: every task gets the same embedding (no copy)
        return emb.unsqueeze(0).expand(copies, *emb.shape)
    return emb.view(copies, batch, *emb.shape[1:])


def encoder_layout(encoder: nn.Module) -> dict:
    """Which blocks adapt, where the tasks branch, how many leading blocks run without a graph."""
    adapted = [
        i for i, b in enumerate(encoder.blocks) if any(isinstance(m, AdaptedLinear) for m in b.modules())
    ]
    return {
        "depth": len(encoder.blocks),
        "adapted_blocks": adapted,
        "branch_block": branch_point(encoder),
        "graph_free_blocks": frozen_prefix(encoder),
    }
