"""FAMO: fast adaptive multitask optimisation (Liu, Liu, Jin, Stone & Liu, NeurIPS 2023)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from mtsam.distributed import all_mean

from .base import LossWeighting, weighted_sum
from .hparam import HParam
from .registry import register_weighting

_EPS = 1e-8
_BETAS = (0.9, 0.999)  # Adam defaults, as in the paper's logit optimiser


@register_weighting
class FAMO(LossWeighting):
    """FAMO: descend sum_t z_t log L_t with z = softmax(xi), normalised so every task's log-loss falls evenly.

    backward(): gradient of T * c * sum_t z_t log L_t with c = 1 / sum_t (z_t / L_t), i.e. loss weights
    w_t = T * c * z_t / L_t (they sum to T; the paper's sum to 1).  after_step(): the logits xi move by
    one Adam step (lr ``lr``, L2 weight decay ``gamma``) against J_softmax^T delta, delta_t = log L_t(prev)
    - log L_t(now), which raises the weight of tasks whose loss fell less.

    The logits are updated by this module's own small Adam, as in the paper, so they are a *buffer*, not a
    parameter (``weighting.parameters()`` is empty and the trainer's optimizer never touches them); the
    Adam moments are buffers too, so state_dict round-trips.
    Deviation: the official code re-evaluates the same batch after ``optimizer.step()`` to get L(now);
    here L(now) is the next step's (different) batch as passed to ``after_step`` — no extra forward,
    noisier delta.  Losses are clamped to >= 1e-8 before the log (min-loss offset 0).
    Extra cost: none (T-element arithmetic per step).
    """

    name: ClassVar[str] = "famo"
    hparams: ClassVar[dict[str, HParam]] = {
        "gamma": HParam(
            "float",
            low=1e-5,
            high=0.1,
            log=True,
            default=0.01,
            ge=0.0,
            help="L2 decay of the task logits (pulls towards equal weights)",
        ),
        "lr": HParam(
            "float",
            low=1e-3,
            high=0.1,
            log=True,
            default=0.025,
            gt=0.0,
            help="Adam learning rate of the task logits",
        ),
    }

    def __init__(self, task_names: Sequence[str], **hparams: Any) -> None:
        super().__init__(task_names, **hparams)
        t = self.num_tasks
        self.register_buffer("logits", torch.zeros(t))
        self.register_buffer("adam_m", torch.zeros(t))
        self.register_buffer("adam_v", torch.zeros(t))
        self.register_buffer("adam_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("prev_losses", torch.zeros(t))
        self.register_buffer("has_prev", torch.zeros((), dtype=torch.bool))

    def objective(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        z = torch.softmax(self.logits.float(), dim=0).to(losses.device)
        # data-parallel: weights from the pooled losses, so every worker applies the same ones
        inv = z / all_mean(losses.detach().float()).clamp_min(_EPS)
        w = self.num_tasks * inv / inv.sum()
        return weighted_sum(losses, w), w

    def after_step(self, losses: Tensor) -> None:
        self._check_losses(losses)
        now = losses.detach().float().to(self.logits.device).clamp_min(_EPS)
        if bool(self.has_prev):
            delta = self.prev_losses.log() - now.log()
            z = torch.softmax(self.logits, dim=0)
            # J_softmax^T delta, plus the L2 decay Adam's weight_decay would add.
            grad = z * (delta - (z * delta).sum()) + self.config["gamma"] * self.logits
            self._adam_step(grad)
        self.prev_losses.copy_(now)
        self.has_prev.fill_(True)

    def _adam_step(self, grad: Tensor) -> None:
        b1, b2 = _BETAS
        self.adam_steps += 1
        k = int(self.adam_steps)
        self.adam_m.mul_(b1).add_(grad, alpha=1 - b1)
        self.adam_v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        m_hat = self.adam_m / (1 - b1**k)
        v_hat = self.adam_v / (1 - b2**k)
        self.logits.sub_(self.config["lr"] * m_hat / (v_hat.sqrt() + _EPS))
