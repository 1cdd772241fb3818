"""Adapters for SAM's image encoder: config dataclass + layer + injection by module name."""

from .base import AdaptedLinear
from .config import (
    AdapterConfig,
    LoRAConfig,
    NoAdapterConfig,
    SharedLoRAConfig,
    ToRAConfig,
    block_indices,
    blocks_label,
    parse_adapter_config,
)
from .inject import inject_adapters, is_shared_adapter_param, is_task_specific, orthogonality_loss
from .lora import LoRALinear
from .routing import TaskRouting
from .tora import ToRALinear

__all__ = [
    "AdaptedLinear",
    "AdapterConfig",
    "LoRAConfig",
    "LoRALinear",
    "NoAdapterConfig",
    "SharedLoRAConfig",
    "TaskRouting",
    "ToRAConfig",
    "ToRALinear",
    "block_indices",
    "blocks_label",
    "inject_adapters",
    "is_shared_adapter_param",
    "is_task_specific",
    "orthogonality_loss",
    "parse_adapter_config",
]
