"""DB-MTL: dual-balancing multi-task learning (Lin, Ye, Xu, Shi & Kwok, 2023)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from mtsam.distributed import all_mean, world_size

from .gradients import GradientWeighting
from .hparam import HParam
from .registry import register_weighting

_EPS = 1e-8


@register_weighting
class DBMTL(GradientWeighting):
    """DB-MTL: balance loss scales with a log transform and gradient magnitudes by rescaling to the largest.

    Loss-scale balancing: every task contributes log(L_t + 1e-8), so task-specific parameters get the
    gradient of sum_t log(L_t + eps) and the shared gradients are g_t / (L_t + eps).
    Gradient-magnitude balancing: the shared log-loss gradients are smoothed per task,
    m_t <- g_t + beta_k (m_t - g_t) with beta_k = beta / k^beta_sigma at step k, and the update is
    sum_t (max_s ||m_s|| / ||m_t||) m_t.  Returned weights are those scale factors
    alpha_t = max||m|| / ||m_t|| (>= 1, applied to the smoothed log-loss gradients, so not normalised).
    The (T, D) buffer m is lazily sized on the first call and resized when a checkpoint is loaded.
    Losses must be non-negative.
    Extra cost: T backward passes through the shared parameters + one through the task-specific ones,
    plus a (T, D) float32 buffer.
    """

    name: ClassVar[str] = "db_mtl"
    hparams: ClassVar[dict[str, HParam]] = {
        "beta": HParam(
            "float",
            low=0.0,
            high=0.99,
            default=0.9,
            ge=0.0,
            lt=1.0,
            help="smoothing of the per-task gradient buffer",
        ),
        "beta_sigma": HParam(
            "float", low=0.0, high=1.0, default=0.0, ge=0.0, help="decay exponent of beta over steps"
        ),
    }

    def __init__(self, task_names: Sequence[str], **hparams: Any) -> None:
        super().__init__(task_names, **hparams)
        self.register_buffer("grad_ema", torch.zeros(self.num_tasks, 0))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def combine(self, grads: Tensor, losses: Tensor) -> tuple[Tensor, Tensor]:
        log_grads = grads / (losses.to(grads.device) + _EPS)[:, None]
        ema = self.grad_ema.to(grads.device)
        if ema.shape != log_grads.shape:  # first call, or the shared parameter set changed
            ema = torch.zeros_like(log_grads)
        self.steps += 1
        beta = self.config["beta"] / int(self.steps) ** self.config["beta_sigma"]
        ema = log_grads + beta * (ema - log_grads)
        self.grad_ema = ema
        norms = ema.norm(dim=1)
        alpha = norms.max() / (norms + _EPS)
        return alpha @ ema, alpha

    def head_loss(self, losses: Tensor, weights: Tensor) -> Tensor:
        if world_size() > 1:  # d log L = dL / L with the pooled L: averaging then equals one process
            return (losses / (all_mean(losses.detach()) + _EPS)).sum()
        return torch.log(losses + _EPS).sum()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        # The buffer's width depends on the shared parameters, unknown at construction.
        saved = state_dict.get(prefix + "grad_ema")
        if saved is not None:
            self.grad_ema = torch.empty_like(saved, device=self.grad_ema.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
