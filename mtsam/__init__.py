"""MTSAM: multi-task Segment Anything with ToRA adapters.

Top-level names load lazily so ``python -m mtsam.data.scenes`` and friends start fast.
"""

from importlib import import_module

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
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mtsam' has no attribute {name!r}")
