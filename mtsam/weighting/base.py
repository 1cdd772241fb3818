"""The ``Weighting`` contract the trainer is written against, and the loss-based base class.

Weight convention (all methods): the returned (T,) weights are on the scale where equal weighting is
all ones, i.e. they sum to T.  Methods defined as a convex combination (MGDA, CAGrad, IMTL-G, RLW,
FAMO) are multiplied by T, which only rescales the effective learning rate by a constant and keeps a
learning rate tuned for ``ew`` (plain sum of task losses) meaningful for every method.  Learned-scale
methods (``uw``) and ``db_mtl`` are not normalised; their docstrings say what they return.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import Parameter

from mtsam.errors import ConfigError

from .hparam import HParam


class Weighting(nn.Module, ABC):
    """Combines T per-task losses into parameter gradients.

    Subclasses declare ``name``, ``uses_gradients`` and ``hparams`` and implement ``backward``.
    Validated hyperparameter values live in ``self.config``; all mutable state is kept in buffers or
    parameters so that ``state_dict`` round-trips (resume) and the module pickles (Ray).
    """

    name: ClassVar[str]
    uses_gradients: ClassVar[bool] = False
    hparams: ClassVar[dict[str, HParam]] = {}

    def __init__(self, task_names: Sequence[str], **hparams: Any) -> None:
        super().__init__()
        task_names = list(task_names)
        if not task_names:
            raise ConfigError("weighting: needs at least one task")
        if len(set(task_names)) != len(task_names):
            raise ConfigError(f"weighting: duplicate task names in {task_names}")
        self.task_names = task_names
        unknown = sorted(set(hparams) - set(self.hparams))
        if unknown:
            known = ", ".join(sorted(self.hparams)) or "none"
            raise ConfigError(
                f"weighting.{unknown[0]}: unknown hyperparameter for '{self.name}' (known: {known})"
            )
        self.config: dict[str, Any] = {
            key: spec.validate(key, hparams.get(key, spec.default), len(task_names))
            for key, spec in self.hparams.items()
        }

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    @abstractmethod
    def backward(self, losses: Tensor, shared_params: list[Parameter]) -> Tensor:
        """Accumulate gradients of all trainable parameters (like ``loss.backward()``).

        losses: (T,) per-task scalar losses of this micro-batch, graph attached.
        Returns the (T,) weights used, detached float32.
        """

    def on_epoch_end(self, epoch_losses: Tensor) -> None:
        """(T,) mean training loss per task of the finished epoch; default: ignored."""
        self._check_losses(epoch_losses)

    def after_step(self, losses: Tensor) -> None:
        """(T,) detached losses of the step just applied by ``optimizer.step()``; default: ignored."""
        self._check_losses(losses)

    def _check_losses(self, losses: Tensor) -> None:
        if not isinstance(losses, Tensor) or losses.shape != (self.num_tasks,):
            shape = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
            raise ValueError(
                f"weighting '{self.name}': expected losses of shape ({self.num_tasks},), got {shape}"
            )

    def extra_repr(self) -> str:
        return f"tasks={self.task_names}, " + ", ".join(f"{k}={v!r}" for k, v in self.config.items())


class LossWeighting(Weighting):
    """Methods that only rescale losses: one ordinary backward pass, no extra cost."""

    uses_gradients: ClassVar[bool] = False

    def backward(self, losses: Tensor, shared_params: list[Parameter]) -> Tensor:
        self._check_losses(losses)
        total, weights = self.objective(losses)
        total.backward()
        return weights.detach().float()

    @abstractmethod
    def objective(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        """Return (scalar objective to backpropagate, (T,) weights used)."""


def weighted_sum(losses: Tensor, weights: Tensor) -> Tensor:
    """sum_t w_t * L_t with the weights treated as constants."""
    return (weights.detach().to(losses.device, losses.dtype) * losses).sum()


def equal_weights(losses: Tensor) -> Tensor:
    return torch.ones(losses.shape[0], device=losses.device, dtype=torch.float32)
