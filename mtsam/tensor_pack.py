"""Pack the tensors of a nested state into one flat buffer per dtype (and device), and back.

A training checkpoint holds ~1,000 small tensors (trainable weights, two Adam moments and a step
per parameter). ``torch.save`` pickles each one as its own storage record, with a Python-level
call per pickled object: 50–100 ms per epoch on the quickstart model, all of it overhead. Packed,
the same state saves as one CPU tensor per dtype and device, a small integer table saying where
each tensor lies, and a skeleton of plain containers in which a tensor is the tuple ``(MARK, i)``;
it still loads with ``torch.load(weights_only=True)``.

    packed = pack(state)   # {"skeleton": ..., "layout": {buffer, ndim, dims}, "buffers": {"float32": ...}}
    state = unpack(packed) # every tensor a fresh contiguous CPU tensor
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

MARK = "__tensor__"


def _walk(value: Any, leaf: Callable[[Any], Any]) -> Any:
    """``value`` with its dicts, lists and tuples rebuilt and ``leaf`` applied to everything else
    (and to the ``(MARK, i)`` placeholders, which ``leaf`` recognises itself)."""
    if isinstance(value, dict):
        return {k: _walk(v, leaf) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and not _is_mark(value):
        return type(value)(_walk(v, leaf) for v in value)
    return leaf(value)


def _is_mark(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and value[0] == MARK


def pack(obj: Any) -> dict:
    """``obj`` (dicts, lists and tuples of tensors and plain values) as one packed dict."""
    # One group per (dtype, device): a CUDA optimiser state is copied to the host in one transfer.
    parts: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    groups: list[tuple[torch.dtype, torch.device]] = []  # per tensor, in visiting order
    ndims: list[int] = []
    dims: list[int] = []

    def placeholder(value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        group = (value.dtype, value.device)
        parts.setdefault(group, []).append(value.reshape(-1))
        groups.append(group)
        ndims.append(value.dim())
        dims.extend(value.shape)
        return (MARK, len(ndims) - 1)

    with torch.no_grad():
        skeleton = _walk(obj, placeholder)
        buffers = {_name(*group): torch.cat(parts[group]).cpu() for group in parts}
    index = {group: i for i, group in enumerate(parts)}
    layout = {
        "buffer": torch.tensor([index[g] for g in groups], dtype=torch.int64),
        "ndim": torch.tensor(ndims, dtype=torch.int64),
        "dims": torch.tensor(dims, dtype=torch.int64),
    }
    return {"skeleton": skeleton, "layout": layout, "buffers": buffers}


def _name(dtype: torch.dtype, device: torch.device) -> str:
    name = str(dtype).removeprefix("torch.")
    return name if device.type == "cpu" else f"{name}@{device}"


def unpack(packed: dict) -> Any:
    """The inverse of ``pack``."""
    buffers = list(packed["buffers"].values())
    offsets = [0] * len(buffers)
    layout = packed["layout"]
    all_dims, at = layout["dims"].tolist(), 0
    tensors = []
    for which, ndim in zip(layout["buffer"].tolist(), layout["ndim"].tolist()):
        shape = all_dims[at : at + ndim]
        at += ndim
        numel = math.prod(shape)
        start = offsets[which]
        tensors.append(buffers[which][start : start + numel].reshape(shape).clone())
        offsets[which] = start + numel

    return _walk(packed["skeleton"], lambda value: tensors[value[1]] if _is_mark(value) else value)
