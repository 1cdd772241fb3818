"""Split-level metric meters and the multi-task gain Δb.

Every meter pools over the whole split (not per batch or per image), so numbers do not depend on
batch size. ``update`` takes the model output *after* its head and the batch target; ``compute``
returns exactly the metric names of the matching task, NaN when nothing valid was seen. A
non-finite prediction raises ``NonFiniteError`` instead of being counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from mtsam.errors import ConfigError, NonFiniteError

NORMAL_THRESHOLDS = (11.25, 22.5, 30.0)


class Meter(Protocol):
    """Accumulator of one task's metrics over one split."""

    def update(self, pred: Tensor, target: Tensor) -> None: ...

    def compute(self) -> dict[str, float]: ...


def _check_spatial(pred: Tensor, target: Tensor, task: str) -> None:
    if pred.shape[0] != target.shape[0] or pred.shape[-2:] != target.shape[-2:]:
        raise ValueError(f"prediction {tuple(pred.shape)} does not match target {tuple(target.shape)}")
    # a NaN would otherwise pass as a class id (argmax) or vanish into a mean: a finite-looking
    # metric from a broken model, which could then be selected as the best epoch
    if pred.is_floating_point() and not bool(torch.isfinite(pred).all()):
        bad = int((~torch.isfinite(pred)).sum())
        raise NonFiniteError(
            f"{task} prediction holds {bad} non-finite value(s) (NaN/inf) of {pred.numel()}; "
            "the evaluation is invalid"
        )


class SegmentationMeter:
    """Confusion matrix over a split; targets outside [0, C) (e.g. −1) are ignored.

    ``update(pred, target)``: pred B×C×H×W scores/log-probs (argmax over C) or B×H×W class ids;
    target B×H×W int.
    """

    def __init__(self, num_classes: int):
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        # rows = ground truth, columns = prediction
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        _check_spatial(pred, target, "semantic")
        if pred.dim() == target.dim() + 1:
            pred = pred.argmax(dim=1)
        c = self.num_classes
        target = target.long()
        valid = (target >= 0) & (target < c)
        # clamp keeps bincount in range even for out-of-range class ids predicted as ints
        flat = target[valid] * c + pred.long()[valid].clamp(0, c - 1)
        counts = torch.bincount(flat, minlength=c * c)
        self.confusion += counts.reshape(c, c).cpu()

    def per_class_iou(self) -> Tensor:
        """IoU per class (float64, length C); NaN for classes neither present nor predicted."""
        conf = self.confusion.double()
        diag = conf.diagonal()
        union = conf.sum(0) + conf.sum(1) - diag
        return torch.where(union > 0, diag / union.clamp_min(1), torch.full_like(diag, math.nan))

    def compute(self) -> dict[str, float]:
        total = int(self.confusion.sum())
        if total == 0:
            return {"miou": math.nan, "pix_acc": math.nan}
        iou = self.per_class_iou()
        miou = float(iou[~iou.isnan()].mean())
        pix_acc = float(self.confusion.diagonal().sum()) / total
        return {"miou": miou, "pix_acc": pix_acc}


class DepthMeter:
    """Absolute and relative error over valid pixels (gt ≠ 0), pooled by pixel count.

    ``update(pred, target)``: pred and target B×1×H×W float.
    """

    def __init__(self) -> None:
        self.abs_sum = 0.0
        self.rel_sum = 0.0
        self.count = 0

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        _check_spatial(pred, target, "depth")
        pred, target = pred.double(), target.double()
        valid = (target != 0) & torch.isfinite(target)
        err = (pred - target).abs()[valid]
        self.abs_sum += float(err.sum())
        self.rel_sum += float((err / target[valid]).sum())
        self.count += int(valid.sum())

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            return {"abs_err": math.nan, "rel_err": math.nan}
        return {"abs_err": self.abs_sum / self.count, "rel_err": self.rel_sum / self.count}


class NormalMeter:
    """Angular error in degrees over valid pixels (gt not all-zero), pooled over the split.

    ``update(pred, target)``: pred and target B×3×H×W; both are re-normalised (eps-safe) before
    the angle, so a head without normalisation still gives meaningful angles. Angles are kept on
    the CPU as float32 for the median.
    """

    def __init__(self) -> None:
        self.angles: list[Tensor] = []

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        _check_spatial(pred, target, "normal")
        # float64: acos is ill-conditioned near 0°, float32 would floor small errors at ~0.02°
        pred, target = pred.double(), target.double()
        valid = (target != 0).any(dim=1)
        p = torch.nn.functional.normalize(pred, dim=1, eps=1e-12)
        g = torch.nn.functional.normalize(target, dim=1, eps=1e-12)
        cos = (p * g).sum(dim=1)[valid].clamp(-1.0, 1.0)
        self.angles.append(torch.rad2deg(torch.acos(cos)).float().cpu())

    def compute(self) -> dict[str, float]:
        names = ["mean", "median"] + [f"within_{t:g}" for t in NORMAL_THRESHOLDS]
        angles = torch.cat(self.angles).numpy() if self.angles else np.zeros(0, np.float32)
        if angles.size == 0:
            return dict.fromkeys(names, math.nan)
        values = [float(angles.mean(dtype=np.float64)), float(np.median(angles))]
        values += [float((angles < t).mean(dtype=np.float64)) for t in NORMAL_THRESHOLDS]
        return dict(zip(names, values))


def delta_b(
    results: Mapping[str, Mapping[str, float]],
    baseline: Mapping[str, Mapping[str, float]],
    directions: Mapping[str, Mapping[str, bool]],
) -> dict[str, float]:
    """Multi-task gain over an explicit single-task baseline, in percent.

    ``results``/``baseline``: {task: {metric: value}}; ``directions``: {task: {metric:
    higher_is_better}}. Every metric in ``results`` is used. Returns ``delta_b_task`` (LibMTL:
    mean over tasks of the mean over that task's metrics) and ``delta_b_metric`` (mean over all
    metrics). Positive = better than the baseline.
    """
    per_task: list[float] = []
    per_metric: list[float] = []
    for task, metrics in results.items():
        if task not in baseline:
            raise ConfigError(f"baseline has no task '{task}' (baseline tasks: {sorted(baseline)})")
        if task not in directions:
            raise ConfigError(f"no metric directions for task '{task}'")
        gains = []
        for metric, value in metrics.items():
            if metric not in baseline[task]:
                raise ConfigError(f"baseline has no metric '{task}/{metric}'")
            if metric not in directions[task]:
                raise ConfigError(f"no direction (higher/lower is better) for metric '{task}/{metric}'")
            base = float(baseline[task][metric])
            if base == 0:
                raise ConfigError(f"baseline value of '{task}/{metric}' is 0: relative gain undefined")
            sign = 1.0 if directions[task][metric] else -1.0
            gains.append(sign * (float(value) - base) / base)
        if gains:
            per_task.append(sum(gains) / len(gains))
            per_metric.extend(gains)
    if not per_metric:
        raise ConfigError("delta_b: results contain no metrics")
    return {
        "delta_b_task": 100.0 * sum(per_task) / len(per_task),
        "delta_b_metric": 100.0 * sum(per_metric) / len(per_metric),
    }
