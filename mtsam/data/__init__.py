"""Datasets (MTAN .npy layout), augmentation and the procedural scene renderer.

Attributes load lazily: ``python -m mtsam.data.scenes`` (numpy only) must not import torch through
this package, nor import itself twice. The ``augment`` function is not re-exported: the package
attribute of that name is the submodule (import it from ``mtsam.data.augment``).
"""

import importlib

_EXPORTS = {
    "CityScapes": "mtsam.data.mtan",
    "MTANDataset": "mtsam.data.mtan",
    "NYUv2": "mtsam.data.mtan",
    "train_val_split": "mtsam.data.mtan",
    "ensure_dataset": "mtsam.data.scenes",
    "render_scene": "mtsam.data.scenes",
    "write_dataset": "mtsam.data.scenes",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mtsam.data' has no attribute '{name}'")
