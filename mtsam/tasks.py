"""Tasks declared as data (LibMTL style): output channels, head, loss, metrics and meter.

The trainer only iterates over ``Task`` objects, so a new task needs a builder registered with
``@register_task("name")`` and a dataset that yields a target under the same key — nothing else.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from mtsam.errors import ConfigError
from mtsam.metrics import DepthMeter, Meter, NormalMeter, SegmentationMeter

HEADS = ("log_softmax", "identity", "l2_normalize")
NORMAL_EPS = 1e-6


@dataclass(frozen=True)
class Task:
    """One prediction task.

    ``loss(pred, target)``: pred B×C×H×W after the head, target as in the batch dict; returns a
    scalar. ``metrics``: metric name -> higher_is_better, in display order. ``meter()``: a fresh
    accumulator whose ``compute()`` returns exactly the keys of ``metrics``.
    """

    name: str
    channels: int
    head: str
    loss: Callable[[Tensor, Tensor], Tensor] = field(compare=False)
    metrics: dict[str, bool]
    meter: Callable[[], Meter] = field(compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("task name must not be empty")
        if not isinstance(self.channels, int) or self.channels < 1:
            raise ConfigError(f"task '{self.name}': channels must be a positive int, got {self.channels!r}")
        if self.head not in HEADS:
            raise ConfigError(f"task '{self.name}': unknown head '{self.head}' (known: {', '.join(HEADS)})")


def apply_head(head: str, x: Tensor) -> Tensor:
    """Apply a task head to raw decoder output x: B×C×H×W -> B×C×H×W."""
    if head == "log_softmax":
        return F.log_softmax(x, dim=1)
    if head == "identity":
        return x
    if head == "l2_normalize":
        return F.normalize(x, dim=1, eps=NORMAL_EPS)
    raise ConfigError(f"unknown head '{head}' (known: {', '.join(HEADS)})")


def _masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    # where() instead of multiply: NaN/inf in masked-out predictions must not leak into the loss;
    # an empty mask gives an exact 0 that is still connected to the graph
    return torch.where(valid, values, torch.zeros_like(values)).sum() / valid.sum().clamp_min(1)


def _check_shapes(name: str, pred: Tensor, target: Tensor) -> None:
    if pred.shape[0] != target.shape[0] or pred.shape[-2:] != target.shape[-2:]:
        raise ValueError(f"{name} loss: prediction {tuple(pred.shape)} vs target {tuple(target.shape)}")


def semantic_loss(pred: Tensor, target: Tensor) -> Tensor:
    """NLL of log-probs pred B×C×H×W vs class ids target B×H×W; ids outside [0, C) are ignored."""
    _check_shapes("semantic", pred, target)
    target = target.long()
    valid = (target >= 0) & (target < pred.shape[1])
    nll = -pred.gather(1, torch.where(valid, target, 0).unsqueeze(1)).squeeze(1)
    return _masked_mean(nll, valid)


def depth_loss(pred: Tensor, target: Tensor) -> Tensor:
    """L1 over valid pixels: pred, target B×1×H×W, target 0 = invalid."""
    _check_shapes("depth", pred, target)
    valid = (target != 0) & torch.isfinite(target)
    return _masked_mean((pred - target).abs(), valid)


def normal_loss(pred: Tensor, target: Tensor) -> Tensor:
    """1 − mean cosine over valid pixels: pred (unit) and target B×3×H×W, all-zero target = invalid."""
    _check_shapes("normal", pred, target)
    valid = (target != 0).any(dim=1)
    cos = (pred * target).sum(dim=1)
    return _masked_mean(1.0 - cos, valid)


TASK_BUILDERS: dict[str, Callable[..., Task]] = {}  # name -> builder(channels=None) -> Task


TaskBuilder = Callable[..., Task]


def register_task(name: str, *, replace: bool = False) -> Callable[[TaskBuilder], TaskBuilder]:
    """Decorator registering ``builder(channels=None) -> Task`` under ``name``."""

    def decorator(builder: TaskBuilder) -> TaskBuilder:
        if name in TASK_BUILDERS and not replace:
            raise ConfigError(f"task '{name}' is already registered (pass replace=True to override)")
        TASK_BUILDERS[name] = builder
        return builder

    return decorator


@register_task("semantic")
def semantic_task(channels: int | None = None) -> Task:
    if channels is None:
        raise ConfigError("task 'semantic' needs channels = number of classes")
    return Task(
        name="semantic",
        channels=channels,
        head="log_softmax",
        loss=semantic_loss,
        metrics={"miou": True, "pix_acc": True},
        meter=functools.partial(SegmentationMeter, channels),
    )


def _fixed_channels(name: str, channels: int | None, expected: int) -> int:
    if channels is not None and channels != expected:
        raise ConfigError(f"task '{name}' has {expected} channel(s), got {channels}")
    return expected


@register_task("depth")
def depth_task(channels: int | None = None) -> Task:
    return Task(
        name="depth",
        channels=_fixed_channels("depth", channels, 1),
        head="identity",
        loss=depth_loss,
        metrics={"abs_err": False, "rel_err": False},
        meter=DepthMeter,
    )


@register_task("normal")
def normal_task(channels: int | None = None) -> Task:
    return Task(
        name="normal",
        channels=_fixed_channels("normal", channels, 3),
        head="l2_normalize",
        loss=normal_loss,
        metrics={
            "mean": False,
            "median": False,
            "within_11.25": True,
            "within_22.5": True,
            "within_30": True,
        },
        meter=NormalMeter,
    )


def build_task(name: str, channels: int | None = None) -> Task:
    """Build a registered task; unknown names raise ConfigError listing the known ones."""
    if name not in TASK_BUILDERS:
        raise ConfigError(f"unknown task '{name}' (known: {', '.join(sorted(TASK_BUILDERS))})")
    builder = TASK_BUILDERS[name]
    task = builder() if channels is None else builder(channels=channels)
    if task.name != name:
        raise ConfigError(f"builder registered as '{name}' returned a task named '{task.name}'")
    return task


def build_tasks(mapping: Mapping[str, int | None]) -> dict[str, Task]:
    """{name: channels or None} -> {name: Task}, keeping the mapping's order."""
    if not mapping:
        raise ConfigError("at least one task is required")
    return {name: build_task(name, channels) for name, channels in mapping.items()}
