"""MTSAM: multi-task Segment Anything with ToRA adapters."""

from .adapter_state import load_adapter, save_adapter
from .adapters import LoRALinear, ToRALinear, orthogonality_loss
from .build import build_mtsam
from .model import MTSAM
from .variants import VARIANTS, sam_registry

__all__ = [
    "MTSAM",
    "VARIANTS",
    "LoRALinear",
    "ToRALinear",
    "build_mtsam",
    "load_adapter",
    "orthogonality_loss",
    "sam_registry",
    "save_adapter",
]
