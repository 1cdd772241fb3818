"""Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .base import LossWeighting
from .registry import register_weighting


@register_weighting
class UncertaintyWeighting(LossWeighting):
    """UW: minimise sum_t exp(-s_t) * L_t + s_t with learnable s_t = log sigma_t^2 (init 0).

    This is Kendall's regression objective 1/(2 sigma^2) L + log sigma multiplied by 2 (only a constant
    learning-rate factor); at the optimum exp(-s_t) = 1 / L_t.  ``log_vars`` is an ``nn.Parameter``: the
    trainer must add ``weighting.parameters()`` to its optimizer.  Returns w_t = exp(-s_t) (not
    normalised; all ones at initialisation).  Extra cost: none.
    """

    name: ClassVar[str] = "uw"

    def __init__(self, task_names: Sequence[str], **hparams: Any) -> None:
        super().__init__(task_names, **hparams)
        self.log_vars = nn.Parameter(torch.zeros(self.num_tasks))

    def objective(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        s = self.log_vars.to(losses.device)
        w = torch.exp(-s)
        total = (w.to(losses.dtype) * losses).sum() + s.sum()
        return total, w
