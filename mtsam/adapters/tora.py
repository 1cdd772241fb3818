"""ToRA: Tensorized low-Rank Adaptation (MTSAM, ICLR 2025).

ΔW ∈ R^{d_in × d_out × T} in Tucker form with core G (R1×R2×R3), task-shared U1 (d_in×R1) and
U2 (d_out_eff×R2), task factor U3 (T×R3). For task t, M_t = Σ_v U3[t,v]·G[:,:,v] and
ΔW_t = s · U2 · M_tᵀ · U1ᵀ. The forward pass uses the factored path x → x·U1 → ·M_t → ·U2ᵀ and
never builds the d_in×d_out×T tensor.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import AdaptedLinear


class ToRALinear(AdaptedLinear):
    def __init__(
        self,
        base: nn.Linear,
        num_tasks: int,
        ranks: tuple[int, int, int] | list[int],
        scaling: float = 0.5,
        dropout: float = 0.0,
        out_blocks: list[tuple[int, int]] | None = None,
    ) -> None:
        super().__init__(base, out_blocks)
        r1, r2, r3 = (int(r) for r in ranks)
        self.num_tasks, self.ranks, self.scaling = num_tasks, (r1, r2, r3), float(scaling)
        # Paper init: G = 0 so ΔW = 0 and the model starts exactly as frozen SAM.
        self.G = nn.Parameter(torch.zeros(r1, r2, r3))
        self.U1 = nn.Parameter(torch.randn(self.in_features, r1))
        self.U2 = nn.Parameter(torch.randn(self.d_out_eff, r2))
        self.U3 = nn.Parameter(torch.randn(num_tasks, r3))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def task_cores(self) -> torch.Tensor:
        """M_t for every task: (T, R1, R2)."""
        return torch.einsum("tv,abv->tab", self.U3, self.G)

    def delta_weight(self, task: int) -> torch.Tensor:
        """ΔW_t as a (d_out, d_in) matrix (zero on rows that are not adapted)."""
        m = self.task_cores()[task]
        return self.scatter_rows(self.scaling * self.U2 @ m.t() @ self.U1.t())

    def forward(self, x: torch.Tensor, task_index: torch.Tensor | int | None = None) -> torch.Tensor:
        """x: (N, ..., d_in) → (N, ..., d_out); task_index: int or (N,) / (N // windows,) tensor."""
        index = self.task_index(task_index, x.shape[0])
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features)
        base_out = nn.functional.linear(flat, self.base.weight, self.base.bias)
        h = self.dropout(flat) @ self.U1  # (N·L, R1)
        cores = self.task_cores()
        if isinstance(index, int):
            z = h @ cores[index]
        else:
            per_row = h.reshape(x.shape[0], -1, self.ranks[0])
            z = torch.bmm(per_row, cores[index]).reshape(-1, self.ranks[1])
        return self.add_update(base_out, z, self.U2, self.scaling).reshape(*lead, self.out_features)

    def orthogonality_terms(self) -> torch.Tensor:
        """The 2 + R3 terms of this layer: ‖U1ᵀU1−I‖_F, ‖U2ᵀU2−I‖_F, ‖G_vᵀG_v−I‖_F (v = 1..R3)."""

        def off_identity(m: torch.Tensor) -> torch.Tensor:
            gram = m.transpose(-2, -1) @ m
            eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
            return torch.linalg.matrix_norm(gram - eye)

        slices = self.G.permute(2, 0, 1)  # (R3, R1, R2)
        return torch.cat([off_identity(self.U1)[None], off_identity(self.U2)[None], off_identity(slices)])

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, tasks={self.num_tasks}, ranks={self.ranks}, s={self.scaling}"
