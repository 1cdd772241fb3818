"""CAGrad: conflict-averse gradient descent (Liu, Liu, Jin, Stone & Liu, NeurIPS 2021)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from torch import Tensor

from .gradients import GradientWeighting, gram
from .hparam import HParam
from .registry import register_weighting

_EPS = 1e-12


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto {w >= 0, sum w = 1} (sort-based)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    k = np.arange(1, len(v) + 1)
    rho = np.nonzero(u - css / k > 0)[0][-1]
    return np.maximum(v - css[rho] / (rho + 1), 0.0)


def cagrad_dual_weights(g: np.ndarray, c: float, max_iter: int = 200, tol: float = 1e-10) -> np.ndarray:
    """argmin over the simplex of w.(G 1/T) + c ||g0|| sqrt(w G w), by projected gradient + backtracking.

    The objective is convex and its minimiser does not change when G is rescaled, so G is normalised
    to O(1) first (raw gradient scales span many decades).
    """
    t = g.shape[0]
    w = np.full(t, 1.0 / t)
    scale = g.mean()
    if t == 1 or c == 0.0 or scale <= _EPS * max(np.trace(g), _EPS):
        return w
    g = g / scale
    a = g.mean(axis=1)
    k = c * np.sqrt(g.mean())

    def f(x: np.ndarray) -> float:
        return float(x @ a + k * np.sqrt(max(x @ g @ x, 0.0) + _EPS))

    fw, step = f(w), 1.0
    for _ in range(max_iter):
        grad = a + k * (g @ w) / np.sqrt(max(w @ g @ w, 0.0) + _EPS)
        while True:
            cand = project_simplex(w - step * grad)
            diff = cand - w
            fc = f(cand)
            if fc <= fw + grad @ diff + (diff @ diff) / (2 * step) or step < 1e-12:
                break
            step *= 0.5
        w, fw, step = cand, fc, step * 2.0
        if diff @ diff < tol:
            break
    return w


@register_weighting
class CAGrad(GradientWeighting):
    """CAGrad: d = g0 + (c ||g0|| / ||g_w||) g_w, the update within distance c ||g0|| of the average gradient
    g0 that maximises the worst task's improvement; g_w = sum_t w_t g_t with w from the dual problem.

    Like the official code the update is divided by 1 + c^2, and (package convention) multiplied by T, so
    c = 0 gives exactly the EW update (sum of task gradients).  Returned weights are the coefficients of
    the update on the task gradients: T * (1/T + lambda w_t) / (1 + c^2).  Task-specific parameters get
    the plain sum of losses (CAGrad is defined on shared parameters).  The dual is solved by projected
    gradient descent instead of SLSQP.
    Extra cost: T backward passes through the shared parameters + one through the task-specific ones,
    plus a small (T x T) convex solve.
    """

    name: ClassVar[str] = "cagrad"
    hparams: ClassVar[dict[str, HParam]] = {
        "c": HParam(
            "float",
            low=0.0,
            high=1.0,
            default=0.4,
            ge=0.0,
            help="radius of the ball around the average gradient; 0 is EW",
        ),
    }

    def combine(self, grads: Tensor, losses: Tensor) -> tuple[Tensor, Tensor]:
        t, c = self.num_tasks, self.config["c"]
        g = gram(grads).numpy()
        w = cagrad_dual_weights(g, c)
        gw_norm = np.sqrt(max(w @ g @ w, 0.0))
        g0_norm = np.sqrt(max(g.mean(), 0.0))
        lam = c * g0_norm / gw_norm if gw_norm > _EPS else 0.0
        coef = t * (1.0 / t + lam * w) / (1.0 + c**2)
        weights = grads.new_tensor(coef)
        return weights @ grads, weights
