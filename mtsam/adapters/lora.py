"""LoRA baselines: one (A_t, B_t) pair per task, or one pair shared by all tasks."""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import AdaptedLinear


class LoRALinear(AdaptedLinear):
    """y = x W0ᵀ + b + (α/r) · B_t A_t x. With ``num_tasks == 1`` the pair is shared by all tasks."""

    def __init__(
        self,
        base: nn.Linear,
        num_tasks: int,
        rank: int,
        alpha: float = 16.0,
        dropout: float = 0.0,
        out_blocks: list[tuple[int, int]] | None = None,
    ) -> None:
        super().__init__(base, out_blocks)
        self.num_tasks, self.rank, self.scaling = num_tasks, rank, alpha / rank
        self.A = nn.Parameter(torch.empty(num_tasks, rank, self.in_features))
        nn.init.kaiming_uniform_(self.A.view(-1, self.in_features), a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(num_tasks, self.d_out_eff, rank))  # zero: starts as frozen SAM
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def shared(self) -> bool:
        return self.num_tasks == 1

    def delta_weight(self, task: int) -> torch.Tensor:
        t = 0 if self.shared else task
        return self.scatter_rows(self.scaling * self.B[t] @ self.A[t])

    def forward(self, x: torch.Tensor, task_index: torch.Tensor | int | None = None) -> torch.Tensor:
        index = 0 if self.shared else self.task_index(task_index, x.shape[0])
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features)
        base_out = nn.functional.linear(flat, self.base.weight, self.base.bias)
        dropped = self.dropout(flat)
        if isinstance(index, int):
            z = dropped @ self.A[index].t()
            up = self.B[index]
            return self.add_update(base_out, z, up, self.scaling).reshape(*lead, self.out_features)
        # Per-sample tasks: gather each sample's pair (cheap: r × d per sample).
        rows = dropped.reshape(x.shape[0], -1, self.in_features)
        z = torch.bmm(rows, self.A[index].transpose(1, 2))
        delta = torch.bmm(z, self.B[index].transpose(1, 2)).reshape(-1, self.d_out_eff)
        return self.add_delta(base_out, delta, self.scaling).reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, tasks={self.num_tasks}, rank={self.rank}"
