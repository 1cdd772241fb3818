"""Datasets (MTAN .npy layout), augmentation and the procedural scene renderer.

Attributes load lazily: ``python -m mtsam.data.scenes`` (numpy only) must not import torch through
this package, nor import itself twice. The ``augment`` function is not re-exported: the package
attribute of that name is the submodule (import it from ``mtsam.data.augment``).
"""

from mtsam._lazy import lazy_exports

_EXPORTS = {
    "CityScapes": "mtsam.data.mtan",
    "MTANDataset": "mtsam.data.mtan",
    "NYUv2": "mtsam.data.mtan",
    "train_val_split": "mtsam.data.mtan",
    "ensure_dataset": "mtsam.data.scenes",
    "render_scene": "mtsam.data.scenes",
    "write_dataset": "mtsam.data.scenes",
}


__getattr__, __all__ = lazy_exports("mtsam.data", _EXPORTS)
