"""Training FLOPs per image, counted as the benchmarks count them (``torch.utils.flop_counter``).

One forward + backward of the exact model of a config (all tasks, one image) runs on the meta
device, so the count costs seconds even for ViT-L at 1024 px and needs no memory. Used as a cost
objective of Pareto sweeps (``search.cost: train_flops``) and by ``benchmarks/``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, mm_flop


def _addmm_inplace_flop(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return mm_flop(a_shape, b_shape)


def count_flops(fn) -> int:
    """FLOPs of ``fn()`` (matmuls, convolutions, attention; forward and any backward inside).

    FlopCounterMode has no formula for the in-place ``addmm_`` the adapters use: given one here.
    """
    mapping = {torch.ops.aten.addmm_: _addmm_inplace_flop}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return int(counter.get_total_flops())


@functools.lru_cache(maxsize=64)
def _train_flops(key: str) -> int:
    from .build import build_mtsam

    spec = json.loads(key)
    with torch.device("meta"):
        model = build_mtsam(spec["variant"], spec["tasks"], spec["adapter"], image_size=spec["image_size"])
    model.train().set_activation_checkpointing(spec["activation_checkpointing"])
    images = torch.empty(1, 3, *spec["label_hw"], device="meta")

    def step():
        outputs = model(images)
        sum(o.float().sum() for o in outputs.values()).backward()

    return count_flops(step)


def train_flops_per_image(
    variant: str,
    tasks: Mapping[str, int],
    adapter: Any,
    image_size: int | None = None,
    label_hw: tuple[int, int] = (288, 384),
    activation_checkpointing: bool = False,
) -> int:
    """FLOPs of one training forward + backward of one image through all ``tasks``
    (checkpointing counts its recomputation)."""
    from .adapters import parse_adapter_config
    from .variants import variant_spec

    key = {
        "variant": variant,
        "tasks": dict(tasks),
        "adapter": parse_adapter_config(adapter).model_dump(mode="json"),
        "image_size": image_size or variant_spec(variant).image_size,
        "label_hw": list(label_hw),
        "activation_checkpointing": bool(activation_checkpointing),
    }
    return _train_flops(json.dumps(key, sort_keys=True))


def flops_for_config(config) -> int:
    from .memory_plan import label_hw

    return train_flops_per_image(
        config.model.variant,
        config.data.channels(),
        config.adapter,
        config.model.image_size,
        label_hw(config),
        config.train.activation_checkpointing,
    )
