"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .gradients import GradientWeighting
from .hparam import HParam
from .registry import register_weighting

_EPS = 1e-12


@register_weighting
class GradNorm(GradientWeighting):
    """GradNorm: learn task weights so that weighted gradient norms track the relative training rates.

    Weights w = T * softmax(logits) (so they are positive and always sum to T: the paper's renormalisation
    holds by construction).  Each call adds to ``logits.grad`` the gradient of
    sum_t | w_t ||g_t|| - mean_k(w_k ||g_k||) * r_t^alpha |, with r_t = (L_t/L_t(0)) / mean_k(L_k/L_k(0))
    and the target held constant; L(0) are the losses of the first call (a buffer).  ``logits`` is an
    ``nn.Parameter``: the trainer steps it with ``weighting.parameters()``.  The step itself uses the
    current weights: shared and task-specific parameters get the gradient of sum_t w_t L_t.
    The paper measures ||g_t|| on the last shared layer; here it is the norm over ``shared_params``
    (pass a single layer to reproduce the paper — the update of the other parameters is unchanged).
    Extra cost: T backward passes through the shared parameters + one through the task-specific ones.
    """

    name: ClassVar[str] = "gradnorm"
    weight_heads: ClassVar[bool] = True
    hparams: ClassVar[dict[str, HParam]] = {
        "alpha": HParam(
            "float",
            low=0.0,
            high=3.0,
            default=1.5,
            ge=0.0,
            help="restoring-force strength; 0 equalises gradient norms",
        ),
    }

    def __init__(self, task_names: Sequence[str], **hparams: Any) -> None:
        super().__init__(task_names, **hparams)
        self.logits = nn.Parameter(torch.zeros(self.num_tasks))
        self.register_buffer("initial_losses", torch.ones(self.num_tasks))
        self.register_buffer("has_initial", torch.zeros((), dtype=torch.bool))

    def task_weights(self) -> Tensor:
        return self.num_tasks * torch.softmax(self.logits, dim=0)

    def combine(self, grads: Tensor, losses: Tensor) -> tuple[Tensor, Tensor]:
        if not bool(self.has_initial):
            self.initial_losses.copy_(losses)
            self.has_initial.fill_(True)
        w = self.task_weights().to(grads.device)
        weighted_norms = w * grads.norm(dim=1)
        ratio = losses / self.initial_losses.to(losses.device).clamp_min(_EPS)
        rate = ratio / ratio.mean().clamp_min(_EPS)
        target = (weighted_norms.mean() * rate ** self.config["alpha"]).detach()
        gradnorm_loss = (weighted_norms - target).abs().sum()
        torch.autograd.backward(gradnorm_loss, inputs=[self.logits])
        w = w.detach()
        return w @ grads, w
