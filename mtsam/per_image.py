"""The reference's evaluation protocol, reported next to our pooled one (``<split>_per_image/...``).

The official MTSAM code evaluates at batch 1 and averages depth and normal metrics *per image*:
each image's mean absolute / relative depth error over its valid pixels, and each image's mean,
median and within-threshold fractions of the normal angle, then the plain mean over images. An
image with many valid pixels therefore counts as much as one with few (our pooled meters weight
by pixel). Segmentation is a pooled confusion matrix in the reference too, so its per-image entries
are the pooled values. See docs/REFERENCE.md ("Metric protocol").

Details kept from the reference: validity is "channel sum ≠ 0" of the target; the normal angle is
acos of the clamped dot product of the head's (already unit) prediction with the raw target; the
median of an even count is the lower middle value (``torch.median``). Not kept: an image without
valid pixels would be 0/0 there (NaN in the average); here it is skipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from .metrics import NORMAL_THRESHOLDS

PER_IMAGE_KINDS = ("depth", "normal")  # tasks whose metrics the reference averages per image


class PerImageMeter:
    """Per-image depth (``abs_err``, ``rel_err``) or normal (``mean``, ``median``, ``within_*``)
    metrics, averaged over the images seen. ``update(pred, target)``: B×C×H×W each."""

    def __init__(self, kind: str) -> None:
        if kind not in PER_IMAGE_KINDS:
            raise ValueError(f"per-image metrics exist for {PER_IMAGE_KINDS}, got {kind!r}")
        self.kind = kind
        self.rows: list[list[float]] = []

    @property
    def names(self) -> list[str]:
        if self.kind == "depth":
            return ["abs_err", "rel_err"]
        return ["mean", "median"] + [f"within_{t:g}" for t in NORMAL_THRESHOLDS]

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        for p, g in zip(pred.double(), target.double()):
            valid = g.sum(dim=0) != 0
            if not bool(valid.any()):
                continue
            self.rows.append(self._depth(p, g, valid) if self.kind == "depth" else self._normal(p, g, valid))

    @staticmethod
    def _depth(p: Tensor, g: Tensor, valid: Tensor) -> list[float]:
        p, g = p[0][valid], g[0][valid]
        err = (p - g).abs()
        return [float(err.mean()), float((err / g).mean())]

    @staticmethod
    def _normal(p: Tensor, g: Tensor, valid: Tensor) -> list[float]:
        cos = (p * g).sum(dim=0)[valid].clamp(-1.0, 1.0)
        angle = torch.rad2deg(torch.acos(cos))
        row = [float(angle.mean()), float(torch.median(angle))]
        return row + [float((angle < t).double().mean()) for t in NORMAL_THRESHOLDS]

    def compute(self) -> dict[str, float]:
        if not self.rows:
            return dict.fromkeys(self.names, math.nan)
        means = torch.tensor(self.rows, dtype=torch.float64).mean(dim=0)
        return {name: float(v) for name, v in zip(self.names, means)}


def per_image_meters(tasks: Mapping) -> dict[str, PerImageMeter]:
    """A meter for every task the reference averages per image (by the task's metric names)."""
    out = {}
    for name, task in tasks.items():
        metrics = set(task.metrics)
        if {"abs_err", "rel_err"} <= metrics:
            out[name] = PerImageMeter("depth")
        elif {"mean", "median"} <= metrics:
            out[name] = PerImageMeter("normal")
    return out


def per_image_results(split: str, pooled: Mapping[str, Mapping[str, float]], meters: Mapping) -> dict:
    """``<split>_per_image/<task>/<metric>``: per-image values where the reference averages per
    image, the pooled values for the other tasks (segmentation is pooled in the reference too)."""
    flat = {}
    for task, metrics in pooled.items():
        values = meters[task].compute() if task in meters else metrics
        flat.update({f"{split}_per_image/{task}/{m}": float(v) for m, v in values.items()})
    return flat
