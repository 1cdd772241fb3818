"""The reference design, kept here as a baseline (not product code).

* ``MaterialisedToRA``: on every forward it builds the full update tensor ΔW ∈ R^{d_in × d_out × T}
  from the Tucker factors with three contractions and applies the task's slice as a dense
  d_in × d_out matmul on the (dropped-out) layer input, added to the frozen output.
* ``reference_backward``: the per-task loop — T separate encoder/decoder forward and backward
  passes, one per task, each with the materialised layers.

Both share the very parameters of our model (the wrapper holds the ``ToRALinear`` it replaces), so
one model, one optimiser and one batch serve both designs; ``tests/test_benchmarks.py`` checks
they compute the same outputs, losses and gradients as the product's path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from mtsam.adapters import ToRALinear


def materialise(layer: ToRALinear) -> torch.Tensor:
    """ΔW as a (d_in, d_out_eff, T) tensor, unscaled: ΔW[:, :, t] = U1 · M_t · U2ᵀ."""
    core_t = torch.einsum("abv,tv->abt", layer.G, layer.U3)  # (R1, R2, T)
    left = torch.einsum("ia,abt->ibt", layer.U1, core_t)  # (d_in, R2, T)
    return torch.einsum("ibt,ob->iot", left, layer.U2)  # (d_in, d_out_eff, T)


class MaterialisedToRA(nn.Module):
    """Reference-design forward of a ``ToRALinear`` (same parameters, same routing)."""

    def __init__(self, inner: ToRALinear) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor, task_index: torch.Tensor | int | None = None) -> torch.Tensor:
        m = self.inner
        index = m.task_index(task_index, x.shape[0])
        delta = materialise(m)  # rebuilt on every forward, as in the reference
        lead = x.shape[:-1]
        flat = x.reshape(-1, m.in_features)
        base_out = F.linear(flat, m.base.weight, m.base.bias)
        dropped = m.dropout(flat)
        if isinstance(index, int):
            update = dropped @ delta[:, :, index]
        else:  # per-sample tasks: each task's rows through that task's dense slice
            rows = dropped.reshape(x.shape[0], -1, m.in_features)
            parts = rows.new_zeros(rows.shape[0], rows.shape[1], m.d_out_eff, dtype=base_out.dtype)
            for t in index.unique().tolist():
                sel = index == t
                parts[sel] = (rows[sel] @ delta[:, :, t]).to(parts.dtype)
            update = parts.reshape(-1, m.d_out_eff)
        return m.add_delta(base_out, update.to(base_out.dtype), m.scaling).reshape(*lead, m.out_features)


def _tora_slots(root: nn.Module) -> list[tuple[nn.Module, str, ToRALinear]]:
    return [
        (parent, name, child)
        for parent in root.modules()
        for name, child in parent.named_children()
        if isinstance(child, ToRALinear)
    ]


@contextmanager
def materialised(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily replace every ``ToRALinear`` of ``model`` by its reference-design wrapper."""
    slots = _tora_slots(model)
    for parent, name, child in slots:
        setattr(parent, name, MaterialisedToRA(child))
    try:
        yield model
    finally:
        for parent, name, child in slots:
            setattr(parent, name, child)


def reference_backward(setup) -> torch.Tensor:
    """Per-task loop: for each task a full forward and backward of its own (gradients accumulate).

    Uses the same fixed task weights as our step, so the accumulated gradients equal ours.
    Returns the (T,) detached losses.
    """
    model, batch = setup.model, setup.batch
    images = batch["image"]
    weights = setup.weighting.weights.to(images.device)
    losses = []
    with materialised(model):
        x, resized = model.preprocess(images)
        for i, task in enumerate(model.task_names):
            with setup.autocast():
                emb = model.encode(x, i)
                out = model.decode(task, emb, resized, tuple(images.shape[-2:]))
            loss = setup.tasks[task].loss(out.float(), batch[task])
            (weights[i] * loss).backward()
            losses.append(loss.detach())
    return torch.stack(losses)
