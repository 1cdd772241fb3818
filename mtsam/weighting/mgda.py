"""MGDA-UB style multiple-gradient descent (Sener & Koltun, NeurIPS 2018) and its min-norm solver."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from .gradients import GradientWeighting, gram
from .hparam import HParam
from .registry import register_weighting

_EPS = 1e-12


def min_norm_weights(g: np.ndarray, max_iter: int = 1000, tol: float = 1e-10) -> np.ndarray:
    """Convex weights a minimising ||sum_t a_t v_t||^2 given the Gram matrix g of the vectors v_t.

    Pairwise Frank–Wolfe (SMO-like): move weight from the worst support vertex to the best vertex with an
    exact line search.  Plain Frank–Wolfe zig-zags when the optimum lies on a face; the pairwise variant
    converges linearly on the simplex and is exact in one step for T = 2.  Stops when the KKT gap
    max_support (G a)_t - min_t (G a)_t is below ``tol`` relative to ||sum a v||^2.
    """
    t = g.shape[0]
    a = np.full(t, 1.0 / t)
    scale = float(np.max(np.diag(g)))
    if scale <= 0.0:  # all gradients zero: any convex combination is optimal
        return a
    g = g / scale  # the minimiser is scale-free; this makes the absolute floor below meaningful
    for _ in range(max_iter):
        ga = g @ a
        k = int(np.argmin(ga))
        j = int(np.argmax(np.where(a > 0, ga, -np.inf)))
        gap = ga[j] - ga[k]
        if gap <= tol * max(float(a @ ga), _EPS):
            break
        curvature = g[k, k] + g[j, j] - 2.0 * g[k, j]
        step = a[j] if curvature <= 0 else min(a[j], gap / curvature)
        a[k] += step
        a[j] -= step
    return a


@register_weighting
class MGDA(GradientWeighting):
    """MGDA: step along the min-norm point of the convex hull of the (normalised) task gradients.

    Gradients are first divided by n_t: 1 ("none"), ||g_t|| ("l2"), L_t ("loss") or L_t * ||g_t|| ("loss+");
    the min-norm convex weights a of the normalised gradients give loss weights w_t = T * a_t / n_t, and
    every parameter gets the gradient of sum_t w_t L_t.  With "none" the shared update is exactly T times
    the min-norm point.  (Sener & Koltun's code applies a to the *un-normalised* losses instead; this
    follows the normalised-gradient form, which keeps the min-norm property for every normaliser.)
    Extra cost: T backward passes through the shared parameters + one through the task-specific ones,
    plus a (T x T) pairwise Frank–Wolfe solve.
    """

    name: ClassVar[str] = "mgda"
    weight_heads: ClassVar[bool] = True
    hparams: ClassVar[dict[str, HParam]] = {
        "normalization": HParam(
            "choice",
            choices=("none", "l2", "loss", "loss+"),
            default="none",
            help="gradient normaliser applied before the min-norm solve",
        ),
    }

    def combine(self, grads: Tensor, losses: Tensor) -> tuple[Tensor, Tensor]:
        kind = self.config["normalization"]
        norms = grads.norm(dim=1)
        scale = {
            "none": torch.ones_like(norms),
            "l2": norms,
            "loss": losses.to(norms.device),
            "loss+": losses.to(norms.device) * norms,
        }[kind].clamp_min(_EPS)
        a = torch.from_numpy(min_norm_weights(gram(grads / scale[:, None]).numpy())).float()
        w = self.num_tasks * a.to(grads.device) / scale
        return w @ grads, w
