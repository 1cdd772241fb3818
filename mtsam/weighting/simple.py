"""Weightings that do not adapt to training: fixed, equal (EW) and random (RLW)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from mtsam.errors import ConfigError

from .base import LossWeighting, equal_weights, weighted_sum
from .hparam import HParam
from .registry import register_weighting
from .rng import draw, new_rng_state


@register_weighting
class FixedWeighting(LossWeighting):
    """Constant user-given weights, normalised to sum to T (so [1, 1, 4] becomes [0.5, 0.5, 2]).

    Normalising keeps the overall gradient scale equal to ``ew``; only the ratios matter.
    Extra cost: none.
    """

    name: ClassVar[str] = "fixed"
    hparams: ClassVar[dict[str, HParam]] = {
        "weights": HParam("floats", low=0.0, high=10.0, default=None, ge=0.0, help="relative task weights"),
    }

    def __init__(self, task_names: Sequence[str], **hparams: Any) -> None:
        super().__init__(task_names, **hparams)
        raw = torch.tensor(self.config["weights"], dtype=torch.float32)
        if raw.sum() <= 0:
            raise ConfigError(f"weighting.weights: must not all be zero, got {list(self.config['weights'])}")
        # Derived from config, so not part of the checkpointed state.
        self.register_buffer("weights", raw * (self.num_tasks / raw.sum()), persistent=False)

    def objective(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        w = self.weights.to(losses.device)
        return weighted_sum(losses, w), w


@register_weighting
class EqualWeighting(LossWeighting):
    """EW: the plain sum of task losses (all weights 1). Extra cost: none."""

    name: ClassVar[str] = "ew"

    def objective(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        w = equal_weights(losses)
        return weighted_sum(losses, w), w


@register_weighting
class RandomWeighting(LossWeighting):
    """RLW (Lin et al., 2022): each call draws w = T * softmax(z), z ~ N(0, I).

    The paper's weights sum to 1; here they are scaled by T (package convention).  Randomness comes from
    a private generator seeded by ``seed`` (default ``torch.initial_seed()``) whose state is a buffer, so
    a resumed run continues the same weight sequence.  Extra cost: none.
    """

    name: ClassVar[str] = "rlw"

    def __init__(self, task_names: Sequence[str], seed: int | None = None, **hparams: Any) -> None:
        super().__init__(task_names, **hparams)
        self.register_buffer("rng_state", new_rng_state(seed))

    def objective(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        z = draw(self.rng_state, lambda g: torch.randn(self.num_tasks, generator=g))
        w = (self.num_tasks * torch.softmax(z, dim=0)).to(losses.device)
        return weighted_sum(losses, w), w
