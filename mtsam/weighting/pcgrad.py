"""PCGrad: projecting conflicting gradients (Yu et al., NeurIPS 2020)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from .gradients import GradientWeighting, gram
from .registry import register_weighting
from .rng import draw, new_rng_state

_EPS = 1e-12


@register_weighting
class PCGrad(GradientWeighting):
    """PCGrad: for each task i, visit the other tasks j in a fresh random order and, whenever the running
    g_i . g_j < 0, remove the component of g_i along g_j; the shared update is the sum of the projected
    gradients (EW scale).

    The projections are done on coefficients in Gram space (each projected g_i is a linear combination of
    the original gradients), so the returned weights are the effective coefficients w with update
    sum_t w_t g_t (>= 1 each).  Task-specific parameters get the plain sum of losses, as the paper applies
    PCGrad to shared parameters only.  The random order comes from a private generator seeded by ``seed``
    (default ``torch.initial_seed()``), kept as a buffer for resume.
    Extra cost: T backward passes through the shared parameters + one through the task-specific ones.
    """

    name: ClassVar[str] = "pcgrad"

    def __init__(self, task_names: Sequence[str], seed: int | None = None, **hparams: Any) -> None:
        super().__init__(task_names, **hparams)
        self.register_buffer("rng_state", new_rng_state(seed))

    def combine(self, grads: Tensor, losses: Tensor) -> tuple[Tensor, Tensor]:
        t = self.num_tasks
        g = gram(grads)
        coef = torch.eye(t, dtype=torch.float64)  # row i: projected g_i in the basis of the original g's
        orders = draw(
            self.rng_state, lambda gen: torch.stack([torch.randperm(t, generator=gen) for _ in range(t)])
        )
        for i in range(t):
            for j in orders[i].tolist():
                if j == i or g[j, j] <= _EPS:
                    continue
                dot = coef[i] @ g[:, j]
                if dot < 0:
                    coef[i, j] -= dot / g[j, j]
        w = coef.sum(dim=0).float().to(grads.device)
        return w @ grads, w
