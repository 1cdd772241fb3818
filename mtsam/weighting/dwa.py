"""Dynamic weight average (Liu, Johns & Davison, MTAN, CVPR 2019)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from .base import LossWeighting, weighted_sum
from .hparam import HParam
from .registry import register_weighting

_EPS = 1e-12


@register_weighting
class DynamicWeightAverage(LossWeighting):
    """DWA: w_t = T * softmax_t(r_t / temperature), r_t = L_t(e-1) / L_t(e-2) from epoch-mean losses.

    Weights are 1 until two epochs have been reported through ``on_epoch_end`` (the paper's first two
    epochs).  The last two epoch losses are buffers, so a resumed run keeps its weights.  Extra cost: none.
    """

    name: ClassVar[str] = "dwa"
    hparams: ClassVar[dict[str, HParam]] = {
        "temperature": HParam(
            "float",
            low=0.5,
            high=10.0,
            log=True,
            default=2.0,
            gt=0.0,
            help="softmax temperature; larger is closer to equal weights",
        ),
    }

    def __init__(self, task_names: Sequence[str], **hparams: Any) -> None:
        super().__init__(task_names, **hparams)
        self.register_buffer("loss_history", torch.zeros(2, self.num_tasks))  # rows: epoch e-2, e-1
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))

    def current_weights(self) -> Tensor:
        if int(self.epochs_seen) < 2:
            return torch.ones(self.num_tasks)
        older, newer = self.loss_history.float().cpu()
        ratio = newer / older.clamp_min(_EPS)
        return self.num_tasks * torch.softmax(ratio / self.config["temperature"], dim=0)

    def objective(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        w = self.current_weights().to(losses.device)
        return weighted_sum(losses, w), w

    def on_epoch_end(self, epoch_losses: Tensor) -> None:
        self._check_losses(epoch_losses)
        history = torch.stack(
            [self.loss_history[1], epoch_losses.detach().float().to(self.loss_history.device)]
        )
        self.loss_history.copy_(history)
        self.epochs_seen += 1
