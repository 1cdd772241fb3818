"""Shared machinery of the adapted linear layers: the frozen base and which output rows adapt."""

from __future__ import annotations

import torch
from torch import nn

from .routing import TaskRouting, expand_index


class AdaptedLinear(nn.Module):
    """A frozen ``nn.Linear`` plus a low-rank update on some of its output blocks.

    ``out_blocks`` lists (start, stop) row ranges of the base output that receive the update,
    e.g. the q and v thirds of SAM's fused qkv projection; the update has ``d_out_eff`` rows,
    the blocks' total size, and unselected rows of ΔW are exactly zero.
    """

    def __init__(self, base: nn.Linear, out_blocks: list[tuple[int, int]] | None = None) -> None:
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.in_features = base.in_features
        self.out_features = base.out_features
        self.out_blocks = list(out_blocks) if out_blocks else [(0, base.out_features)]
        self.d_out_eff = sum(b - a for a, b in self.out_blocks)
        self.routing: TaskRouting | None = None

    def task_index(self, task_index: torch.Tensor | int | None, batch: int) -> torch.Tensor | int:
        if task_index is not None:
            return expand_index(task_index, batch)
        if self.routing is None:
            raise RuntimeError(f"{type(self).__name__} needs a task_index")
        return self.routing.for_batch(batch)

    def add_update(self, base_out: torch.Tensor, z: torch.Tensor, up: torch.Tensor, scale: float):
        """``base_out + scale · z @ upᵀ`` on the adapted rows, fused into addmm.

        base_out: (N, d_out), the fresh output of the frozen linear; z: (N, r); up: (d_out_eff, r).
        When the adapted rows are all rows (e.g. q, k and v of a fused qkv), the update is added
        in place: autograd does not save a linear's output, so this is safe, and it saves a
        full-size copy (forward) and the per-block slicing and concatenation (forward and backward).
        """
        if self._adapts_all_rows():
            # In-place ops are not autocast: cast like the out-of-place addmm would.
            return base_out.addmm_(z.to(base_out.dtype), up.t().to(base_out.dtype), alpha=scale)
        return self._per_block(base_out, lambda out, rows: torch.addmm(out, z, up[rows].t(), alpha=scale))

    def add_delta(self, base_out: torch.Tensor, delta: torch.Tensor, scale: float):
        """``base_out + scale · delta`` on the adapted rows; delta: (N, d_out_eff)."""
        return self._per_block(base_out, lambda out, rows: torch.add(out, delta[:, rows], alpha=scale))

    def _spans(self) -> list[tuple[int, int]]:
        """``out_blocks`` with adjacent blocks merged ([(0, 768), (768, 1536)] → [(0, 1536)])."""
        spans: list[tuple[int, int]] = []
        for start, stop in self.out_blocks:
            if spans and spans[-1][1] == start:
                spans[-1] = (spans[-1][0], stop)
            else:
                spans.append((start, stop))
        return spans

    def _adapts_all_rows(self) -> bool:
        return self._spans() == [(0, self.out_features)]

    def _per_block(self, base_out: torch.Tensor, update) -> torch.Tensor:
        if self._adapts_all_rows():
            return update(base_out, slice(None))
        pieces, cursor, row = [], 0, 0
        for start, stop in self._spans():
            if start > cursor:
                pieces.append(base_out[:, cursor:start])
            size = stop - start
            pieces.append(update(base_out[:, start:stop], slice(row, row + size)))
            cursor, row = stop, row + size
        if cursor < self.out_features:
            pieces.append(base_out[:, cursor:])
        return torch.cat(pieces, dim=1)

    def scatter_rows(self, delta_eff: torch.Tensor) -> torch.Tensor:
        """Place a (d_out_eff, d_in) update into a zero (d_out, d_in) matrix."""
        full = delta_eff.new_zeros(self.out_features, delta_eff.shape[1])
        row = 0
        for start, stop in self.out_blocks:
            full[start:stop] = delta_eff[row : row + stop - start]
            row += stop - start
        return full

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, adapted_rows={self.out_blocks}"
