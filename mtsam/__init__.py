"""MTSAM: multi-task Segment Anything with ToRA adapters.

Top-level names load lazily so ``python -m mtsam.data.scenes`` and friends start fast.
"""

from mtsam._lazy import lazy_exports

_EXPORTS = {
    "MTSAM": "mtsam.model",
    "VARIANTS": "mtsam.variants",
    "sam_registry": "mtsam.variants",
    "LoRALinear": "mtsam.adapters",
    "ToRALinear": "mtsam.adapters",
    "orthogonality_loss": "mtsam.adapters",
    "build_mtsam": "mtsam.build",
    "load_adapter": "mtsam.adapter_state",
    "save_adapter": "mtsam.adapter_state",
}

__getattr__, __all__ = lazy_exports("mtsam", _EXPORTS)
