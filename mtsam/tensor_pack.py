"""Pack the tensors of a nested state into one flat buffer per dtype, and back.

A training checkpoint holds ~1,000 small tensors (trainable weights, two Adam moments and a step
per parameter). ``torch.save`` pickles each one as its own storage record, with a Python-level
call per pickled object: 50–100 ms per epoch on the quickstart model, all of it overhead. Packed,
the same state saves as one tensor per dtype, a small integer table saying where each tensor
lies, and a skeleton of plain containers in which a tensor is the tuple ``(MARK, i)``; it still
loads with ``torch.load(weights_only=True)``.

    packed = pack(state)   # {"skeleton": ..., "layout": {buffer, ndim, dims}, "buffers": {"float32": ...}}
    state = unpack(packed) # every tensor a fresh contiguous CPU tensor
"""

from __future__ import annotations

from typing import Any

import torch

MARK = "__tensor__"


def pack(obj: Any) -> dict:
    """``obj`` (dicts, lists and tuples of tensors and plain values) as one packed dict."""
    parts: dict[torch.dtype, list[torch.Tensor]] = {}
    dtypes: list[torch.dtype] = []  # per tensor, in visiting order
    ndims: list[int] = []
    dims: list[int] = []

    def visit(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            parts.setdefault(value.dtype, []).append(value.reshape(-1))
            dtypes.append(value.dtype)
            ndims.append(value.dim())
            dims.extend(value.shape)
            return (MARK, len(ndims) - 1)
        if isinstance(value, dict):
            return {k: visit(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(visit(v) for v in value)
        return value

    with torch.no_grad():
        skeleton = visit(obj)
        order = list(parts)
        buffers = {_name(d): _concat_on_cpu(parts[d]) for d in order}
    index = {d: i for i, d in enumerate(order)}
    layout = {
        "buffer": torch.tensor([index[d] for d in dtypes], dtype=torch.int64),
        "ndim": torch.tensor(ndims, dtype=torch.int64),
        "dims": torch.tensor(dims, dtype=torch.int64),
    }
    return {"skeleton": skeleton, "layout": layout, "buffers": buffers}


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _concat_on_cpu(parts: list[torch.Tensor]) -> torch.Tensor:
    # One device-to-host copy, not one per tensor, when the state lives on one device (CUDA).
    if len({part.device for part in parts}) == 1:
        return torch.cat(parts).cpu()
    return torch.cat([part.cpu() for part in parts])


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
        numel = 1
        for size in shape:
            numel *= size
        start = offsets[which]
        tensors.append(buffers[which][start : start + numel].reshape(shape).clone())
        offsets[which] = start + numel

    def visit(value: Any) -> Any:
        if isinstance(value, tuple) and len(value) == 2 and value[0] == MARK:
            return tensors[value[1]]
        if isinstance(value, dict):
            return {k: visit(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(visit(v) for v in value)
        return value

    return visit(packed["skeleton"])
