"""IMTL-G: impartial multi-task learning, gradient part (Liu et al., ICLR 2021)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from torch import Tensor

from .gradients import GradientWeighting, gram
from .registry import register_weighting

_EPS = 1e-12


@register_weighting
class IMTLG(GradientWeighting):
    """IMTL-G: the combination g = sum_t a_t g_t (sum_t a_t = 1) whose projections onto every task's unit
    gradient u_t are equal, in closed form a_{2..T} = g_1 U^T (D U^T)^-1 with rows D_j = g_1 - g_j and
    U_j = u_1 - u_j, a_1 = 1 - sum a_{2..T}.  Computed from the T x T Gram matrix; a pseudo-inverse covers
    degenerate (parallel or zero) gradients.  Returned weights are T * a (package convention); they may be
    negative.  Only the gradient part is implemented — IMTL-L's learned loss scales are not (use ``uw`` for
    loss-scale learning).  Task-specific parameters get the plain sum of losses.
    Extra cost: T backward passes through the shared parameters + one through the task-specific ones.
    """

    name: ClassVar[str] = "imtl"

    def combine(self, grads: Tensor, losses: Tensor) -> tuple[Tensor, Tensor]:
        t = self.num_tasks
        a = np.ones(1)
        if t > 1:
            g = gram(grads).numpy()
            inv_norm = 1.0 / np.sqrt(np.maximum(np.diag(g), _EPS))
            gu = g * inv_norm[None, :]  # gu[i, j] = g_i . u_j
            # (g_1 - g_i) . (u_1 - u_j) and g_1 . (u_1 - u_j) for i, j = 2..T, via the Gram matrix.
            du = gu[0, 0] - gu[0, 1:][None, :] - gu[1:, 0][:, None] + gu[1:, 1:]
            rhs = gu[0, 0] - gu[0, 1:]
            rest = rhs @ np.linalg.pinv(du)
            a = np.concatenate([[1.0 - rest.sum()], rest])
        weights = grads.new_tensor(t * a)
        return weights @ grads, weights
