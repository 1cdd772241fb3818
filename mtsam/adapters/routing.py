"""Which task each sample belongs to, shared by every adapter layer of one model.

SAM's attention calls ``self.qkv(x)`` with no room for extra arguments, so the model writes the
per-sample task index here before the encoder runs and the adapter layers read it.
"""

from __future__ import annotations

import torch


class TaskRouting:
    def __init__(self) -> None:
        self.index: torch.Tensor | int | None = None

    def for_batch(self, batch: int) -> torch.Tensor | int:
        """Task index per row of a layer input with leading dim ``batch`` (see ``expand_index``)."""
        if self.index is None:
            raise RuntimeError("task-specific adapter called without a task index; use model.forward")
        return expand_index(self.index, batch)


def expand_index(index: torch.Tensor | int, batch: int) -> torch.Tensor | int:
    """Windowed attention folds windows into the batch (image-major), so an index of length N
    expands by ``batch // N`` with ``repeat_interleave``; an int applies to every row."""
    if isinstance(index, int) or index.numel() == batch:
        return index
    if batch % index.numel():
        raise RuntimeError(f"cannot route {index.numel()} task indices over a batch of {batch}")
    return index.repeat_interleave(batch // index.numel())
