"""Estimated peak training memory of one run configuration, and whether it fits a GPU.

Counted, not guessed: the exact model of the config (variant, image size, tasks, adapter, blocks)
is built on the **meta device** (no memory, no compute) and one training forward runs under
``torch.autograd.graph.saved_tensors_hooks``, which sees every tensor autograd keeps for backward
(deduplicated by storage; parameters themselves are not counted twice). The terms:

- weights: every parameter in float32 (autocast keeps float32 master weights);
- gradients and optimizer state: float32 gradient + Adam's two moments per trainable parameter;
- activations: the saved tensors. bf16 counts a bf16-cast model, plus the bf16 copies autocast
  makes of the weights of every layer that runs with a graph (kept for backward);
- with activation checkpointing, a checkpointed block keeps only its input, and one block at a
  time is recomputed in backward: activations − Σ block saves + Σ block inputs + max block save;
- workspace: transients of the largest op in backward (2 × its largest saved tensor: the gradient
  of e.g. a global-attention map and its input's gradient live next to each other).

What it leaves out: the CUDA context (~0.5–1 GiB, not in ``max_memory_allocated`` either) and
allocator fragmentation; ``fits`` keeps 10 % + 1 GiB of headroom for them. The estimate is checked
against measured peaks in ``benchmarks/run.py`` (p7) and ``benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

GIB = 2**30
HEADROOM_FRACTION, HEADROOM_BYTES = 0.10, 1 * GIB
LABEL_HW = {"nyuv2": (288, 384), "cityscapes": (128, 256)}  # MTAN releases


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    gradients: int
    optimizer: int
    activations: int
    workspace: int
    activations_without_checkpointing: int
    precision: str
    activation_checkpointing: bool

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.workspace

    @property
    def training_state(self) -> int:
        """What one step adds on top of the loaded model (what the benchmarks measure)."""
        return self.total - self.weights

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}

    def describe(self) -> str:
        g = lambda v: f"{v / GIB:.2f}"  # noqa: E731
        ckpt = "on" if self.activation_checkpointing else "off"
        return (
            f"est. peak {g(self.total)} GiB ({self.precision}, checkpointing {ckpt}): weights "
            f"{g(self.weights)}, grads {g(self.gradients)}, Adam {g(self.optimizer)}, activations "
            f"{g(self.activations)}, workspace {g(self.workspace)}"
        )


def _count_saved(model: torch.nn.Module, images: torch.Tensor) -> dict[str, Any]:
    """One training forward on meta tensors: saved bytes per encoder block and elsewhere."""
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: set[int] = set()
    state = {"block": None}
    per_block: dict[int, int] = {}
    block_input: dict[int, int] = {}
    other = [0]
    largest = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage()._cdata
        if key in params or key in seen:
            return t
        seen.add(key)
        size = t.untyped_storage().nbytes()
        largest[0] = max(largest[0], size)
        if state["block"] is None:
            other[0] += size
        else:
            per_block[state["block"]] = per_block.get(state["block"], 0) + size
        return t

    def enter(i):
        def hook(module, args):
            state["block"] = i
            block_input[i] = block_input.get(i, 0) + args[0].numel() * args[0].element_size()

        return hook

    hooks = []
    for i, block in enumerate(model.image_encoder.blocks):
        hooks.append(block.register_forward_pre_hook(enter(i)))
        hooks.append(block.register_forward_hook(lambda *a: state.update(block=None)))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            outputs = model(images)
    finally:
        for h in hooks:
            h.remove()
    # The losses read each output in float32 (the trainer's .float()): about one copy of each.
    other[0] += sum(o.numel() * 4 for o in outputs.values())
    return {"per_block": per_block, "block_input": block_input, "other": other[0], "largest": largest[0]}


@functools.lru_cache(maxsize=64)
def _estimate(key: str) -> MemoryEstimate:
    from .build import build_mtsam

    spec = json.loads(key)
    bf16 = spec["precision"] == "bf16"
    with torch.device("meta"):
        model = build_mtsam(
            spec["variant"], spec["tasks"], spec["adapter"], image_size=spec["image_size"], seed=0
        )
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    weights = sum(p.numel() * 4 for p in model.parameters())
    grads = sum(p.numel() * 4 for p in trainable)
    if bf16:
        model = model.to(torch.bfloat16)
    dtype = torch.bfloat16 if bf16 else torch.float32
    images = torch.empty(spec["batch"], 3, *spec["label_hw"], device="meta", dtype=dtype)
    saved = _count_saved(model, images)
    layout = model.encoder_layout()
    graph_free = layout["graph_free_blocks"]
    blocks = saved["per_block"]
    activations_plain = saved["other"] + sum(blocks.values())
    if bf16:  # autocast's bf16 copies of the (float32) weights of layers that run with a graph
        graphed = [b for i, b in enumerate(model.image_encoder.blocks) if i >= graph_free]
        graphed += [model.image_encoder.neck, model.decoders]
        activations_plain += sum(p.numel() * 2 for m in graphed for p in m.parameters())
    activations = activations_plain
    if spec["activation_checkpointing"]:
        ckpt = [i for i in blocks if i >= graph_free]
        if ckpt:
            activations += sum(saved["block_input"][i] - blocks[i] for i in ckpt)
            activations += max(blocks[i] for i in ckpt)
    return MemoryEstimate(
        weights=weights,
        gradients=grads,
        optimizer=2 * grads,
        activations=activations,
        workspace=2 * saved["largest"],
        activations_without_checkpointing=activations_plain,
        precision="bf16 autocast" if bf16 else "float32",
        activation_checkpointing=bool(spec["activation_checkpointing"]),
    )


def estimate_memory(
    variant: str,
    tasks: Mapping[str, int],
    adapter: Any,
    image_size: int | None = None,
    batch: int = 1,
    label_hw: tuple[int, int] = (288, 384),
    precision: str = "bf16",
    activation_checkpointing: bool = False,
) -> MemoryEstimate:
    """Peak training memory of one step (see the module doc); ``precision``: "bf16" or "fp32"."""
    from .adapters import parse_adapter_config
    from .variants import variant_spec

    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision: expected bf16 or fp32, got {precision!r}")
    key = {
        "variant": variant,
        "tasks": dict(tasks),
        "adapter": parse_adapter_config(adapter).model_dump(mode="json"),
        "image_size": image_size or variant_spec(variant).image_size,
        "batch": int(batch),
        "label_hw": list(label_hw),
        "precision": precision,
        "activation_checkpointing": bool(activation_checkpointing),
    }
    return _estimate(json.dumps(key, sort_keys=True))


def resolved_precision(config, device_type: str) -> str:
    """The trainer's rule (mtsam/device.py): auto = bf16 on CUDA, float32 on CPU."""
    p = config.train.precision
    return "bf16" if p == "bf16" or (p == "auto" and device_type == "cuda") else "fp32"


def label_hw(config) -> tuple[int, int]:
    data = config.data
    return LABEL_HW.get(data.dataset, (data.scenes.height, data.scenes.width))


def estimate_for_config(config, device_type: str = "cuda", **changes) -> MemoryEstimate:
    """The estimate of a validated ``RunConfig`` as it would train on ``device_type``;
    ``changes`` override batch / image_size / activation_checkpointing (for fit advice)."""
    args = {
        "batch": config.data.batch_size,
        "image_size": config.model.image_size,
        "activation_checkpointing": config.train.activation_checkpointing,
    }
    args.update(changes)
    return estimate_memory(
        config.model.variant,
        config.data.channels(),
        config.adapter,
        label_hw=label_hw(config),
        precision=resolved_precision(config, device_type),
        **args,
    )


def usable_bytes(capacity_bytes: float) -> float:
    return capacity_bytes * (1 - HEADROOM_FRACTION) - HEADROOM_BYTES


def fit_check(config, capacity_bytes: float, device_type: str = "cuda") -> str | None:
    """None when the config fits ``capacity_bytes``; else one line saying what would make it fit."""
    est = estimate_for_config(config, device_type)
    limit = usable_bytes(capacity_bytes)
    if est.total <= limit:
        return None
    batch, accum = config.data.batch_size, config.train.grad_accum
    size = config.model.image_size or _native_size(config)
    options = []
    if not config.train.activation_checkpointing:
        options.append(({"activation_checkpointing": True}, "train.activation_checkpointing=true"))
    if batch > 1:
        options.append(
            ({"batch": 1}, f"data.batch_size=1 with train.grad_accum={batch * accum} (same effective batch)")
        )
        if not config.train.activation_checkpointing:
            options.append(
                ({"batch": 1, "activation_checkpointing": True}, "checkpointing and data.batch_size=1 "
                 f"with train.grad_accum={batch * accum}"),
            )  # fmt: skip
    for smaller in (768, 512, 384, 256):
        if smaller < size:
            options.append(({"image_size": smaller}, f"model.image_size={smaller}"))
    fixes = []
    for change, text in options:
        alt = estimate_for_config(config, device_type, **change)
        if alt.total <= limit:
            fixes.append(f"{text} ({alt.total / GIB:.1f} GiB)")
            if len(fixes) == 2:
                break
    how = "; or ".join(fixes) if fixes else "none of checkpointing, batch 1 or a smaller image size"
    return (
        f"needs ~{est.total / GIB:.1f} GiB, the GPU has {capacity_bytes / GIB:.1f} GiB "
        f"({limit / GIB:.1f} usable): would fit with {how}"
    )


def _native_size(config) -> int:
    from .variants import variant_spec

    return variant_spec(config.model.variant).image_size
