"""Inject adapters into SAM's ViT encoder by module name (peft style) and mark what trains."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .base import AdaptedLinear
from .config import QKV_PARTS, LoRAConfig, NoAdapterConfig, SharedLoRAConfig, ToRAConfig, block_indices
from .lora import LoRALinear
from .routing import TaskRouting
from .tora import ToRALinear


def _targets_by_module(targets: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Group user targets by the linear module they live in: {"attn.qkv": ("q", "v"), ...}."""
    grouped: dict[str, tuple[str, ...]] = {}
    qkv = tuple(t for t in targets if t in QKV_PARTS)
    if qkv:
        grouped["attn.qkv"] = qkv
    for t in targets:
        if t not in QKV_PARTS:
            grouped["attn.proj" if t == "proj" else t] = ()
    return grouped


def _out_blocks(linear: nn.Linear, parts: tuple[str, ...]) -> list[tuple[int, int]] | None:
    if not parts:
        return None
    third = linear.out_features // 3
    return [(QKV_PARTS.index(p) * third, (QKV_PARTS.index(p) + 1) * third) for p in parts]


def _make_layer(config, linear: nn.Linear, blocks, num_tasks: int) -> AdaptedLinear:
    if isinstance(config, ToRAConfig):
        layer = ToRALinear(linear, num_tasks, config.ranks, config.scaling, config.dropout, blocks)
        r1, r2, _ = config.ranks
        if r1 > layer.in_features or r2 > layer.d_out_eff:
            raise ConfigError(
                f"adapter.ranks: R1={r1} must be <= {layer.in_features} (layer input width) and "
                f"R2={r2} <= {layer.d_out_eff} (adapted output width)"
            )
        return layer
    shared = isinstance(config, SharedLoRAConfig)
    layer = LoRALinear(linear, 1 if shared else num_tasks, config.rank, config.alpha, config.dropout, blocks)
    if config.rank > min(layer.in_features, layer.d_out_eff):
        raise ConfigError(f"adapter.rank: {config.rank} exceeds the layer width {layer.in_features}")
    return layer


def inject_adapters(encoder: nn.Module, config, num_tasks: int, routing: TaskRouting) -> list[AdaptedLinear]:
    """Replace the targeted linears of the selected encoder blocks (``config.blocks``) with adapted
    ones; returns them in order."""
    if isinstance(config, NoAdapterConfig):
        return []
    assert isinstance(config, (ToRAConfig, LoRAConfig))
    layers = []
    for index in block_indices(config.blocks, len(encoder.blocks)):
        block = encoder.blocks[index]
        for path, parts in _targets_by_module(config.targets).items():
            parent_name, _, attr = path.rpartition(".")
            parent = block.get_submodule(parent_name)
            linear = getattr(parent, attr)
            layer = _make_layer(config, linear, _out_blocks(linear, parts), num_tasks)
            layer.routing = routing
            setattr(parent, attr, layer)
            layers.append(layer)
    return layers


def is_task_specific(module: nn.Module) -> bool:
    """An adapter whose output depends on the task (ToRA's U3, per-task LoRA pairs)."""
    return isinstance(module, ToRALinear) or (isinstance(module, LoRALinear) and not module.shared)


def is_shared_adapter_param(name: str, module: AdaptedLinear) -> bool:
    """Task-shared adapter factors (used by gradient-based task weighting)."""
    if isinstance(module, ToRALinear):
        return name in ("G", "U1", "U2")
    return isinstance(module, LoRALinear) and module.shared


def orthogonality_loss(model: nn.Module) -> torch.Tensor:
    """The regulariser as the reference defines it (so λ is the paper's λ): the mean over *all*
    individual terms of all ToRA layers, ‖U1ᵀU1−I‖_F, ‖U2ᵀU2−I‖_F and each ‖G_vᵀG_v−I‖_F
    (2 + R3 terms per layer; U3 is not regularised). 0 without ToRA."""
    terms = [m.orthogonality_terms() for m in model.modules() if isinstance(m, ToRALinear)]
    if not terms:
        return torch.zeros(())
    return torch.cat(terms).mean()
