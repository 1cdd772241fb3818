"""Config → objects: model, datasets, tasks, weighting. The one place that reads a RunConfig's
sections and turns them into the things the trainer runs; it also resolves the embedded default's
cached assets (rendered scenes, a SAM-format checkpoint for the small variants).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .adapter_state import atomic_torch_save
from .build import build_mtsam
from .config import RunConfig, cache_dir
from .data import CityScapes, NYUv2, train_val_split
from .errors import ConfigError
from .model import MTSAM
from .tasks import Task, build_tasks
from .variants import build_sam
from .weighting import Weighting, build_weighting

OFFICIAL = {"vit_b": "sam_vit_b_01ec64.pth", "vit_l": "sam_vit_l_0b3195.pth", "vit_h": "sam_vit_h_4b8939.pth"}


def ensure_sam_checkpoint(variant: str, seed: int = 0) -> Path:
    """A SAM-format checkpoint for a small variant, saved from segment-anything's own classes.

    Official weights cannot be downloaded here; this file has exactly the official layout, so the
    embedded default loads it through the same code path as ``sam_vit_l_0b3195.pth``.
    """
    if variant in OFFICIAL:
        raise ConfigError(
            f"model.checkpoint: 'auto' is only for the small test variants; for {variant} give the path "
            f"to the official {OFFICIAL[variant]}"
        )
    path = cache_dir() / f"sam_{variant}_seed{seed}.pth"
    if not path.is_file():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            sam = build_sam(variant)
        atomic_torch_save(sam.state_dict(), path)
    return path


def resolve_checkpoint(config: RunConfig) -> Path | None:
    ckpt = config.model.checkpoint
    if ckpt is None:
        return None
    if ckpt == "auto":
        # the stand-in for SAM's released weights: one file per variant, whatever the run's seed
        # (model.seed draws the adapters and no-mask jitter; search.seeds varies it per seed)
        return ensure_sam_checkpoint(config.model.variant)
    path = Path(ckpt).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.checkpoint: file not found: {path}")
    return path.resolve()


def build_model(config: RunConfig) -> MTSAM:
    return build_mtsam(
        config.model.variant,
        config.data.channels(),
        config.adapter,
        checkpoint=resolve_checkpoint(config),
        image_size=config.model.image_size,
        normalize=config.model.normalize,
        seed=config.model.seed,
        no_mask_jitter=config.model.no_mask_jitter,
        train_neck_norms=config.reference.neck_norms == "train",
    )


def tasks_for(config: RunConfig) -> dict[str, Task]:
    return build_tasks(config.data.channels())


def weighting_for(config: RunConfig) -> Weighting:
    return build_weighting(config.weighting.method, config.data.tasks, **config.weighting.hparams())


def dataset_root(config: RunConfig) -> Path:
    data = config.data
    if data.dataset != "scenes":
        root = Path(data.root).expanduser()
        if not root.is_dir():
            raise ConfigError(f"data.root: dataset folder not found: {root}")
        return root.resolve()
    from .data.scenes import ensure_dataset

    params = {**data.scenes.model_dump(), "num_classes": data.num_classes}
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    root = Path(data.root).expanduser() if data.root else cache_dir() / f"scenes-{key}"
    return ensure_dataset(root, **params)


def build_datasets(config: RunConfig):
    """(train, val, test): validation is carved from MTAN's train folder; MTAN's "val" is the test set."""
    data = config.data
    root = dataset_root(config)
    cls = CityScapes if data.dataset == "cityscapes" else NYUv2
    probe = cls(root, "train", tasks=data.tasks)
    train_ids, val_ids = train_val_split(len(probe), data.val_fraction, data.split_seed)
    seed = config.train.seed
    return (
        cls(
            root,
            "train",
            tasks=data.tasks,
            augment=data.augment,
            indices=train_ids,
            seed=seed,
            normal_augment=config.reference.normal_augment,
        ),
        cls(root, "train", tasks=data.tasks, indices=val_ids),
        cls(root, "val", tasks=data.tasks),
    )
