"""Adapters for SAM's image encoder: config dataclass + layer + injection by module name."""

from .base import AdaptedLinear
from .config import (
    AdapterConfig,
    LoRAConfig,
    NoAdapterConfig,
    SharedLoRAConfig,
    ToRAConfig,
    parse_adapter_config,
)
from .inject import inject_adapters, is_shared_adapter_param, orthogonality_loss
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
    "inject_adapters",
    "is_shared_adapter_param",
    "orthogonality_loss",
    "parse_adapter_config",
]
