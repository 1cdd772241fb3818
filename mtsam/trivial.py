"""Trivial predictors: what a model must beat to have learned anything.

From training-split statistics, one constant prediction per task, chosen by the task's head:
segmentation (log-softmax) → the majority class, a regression map (identity, e.g. depth) → the
mean of the valid pixels, a unit-vector map (l2-normalise, e.g. normals) → the mean valid vector,
normalised (the constant that maximises the mean cosine, i.e. minimises the normal loss). They are
scored with the tasks' own pooled meters on val and test, so the numbers compare 1:1 with a run's.

``trivial.json`` (in every run directory):
``{"val": {task: {metric: v}}, "test": {...}, "predictor": {task: "majority class" | ...}}``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path

import torch

from .tasks import Task

TRIVIAL_FILE = "trivial.json"
PREDICTOR_NAMES = {"log_softmax": "majority class", "identity": "mean {task}", "l2_normalize": "mean {task}"}

# Datasets this process has scored, by a signature of their files and tasks: a reused Ray actor
# (or a baseline next to its sweep's trials) does not read the splits again.
_cache: dict[tuple, dict] = {}


def _unaugmented(dataset):
    """The same samples without augmentation (statistics describe the data, not its random crops)."""
    if not getattr(dataset, "augment", False):
        return dataset
    clean = copy.copy(dataset)
    clean.augment = False
    return clean


def _valid(task: Task, target: torch.Tensor) -> torch.Tensor:
    if task.head == "log_softmax":
        return (target >= 0) & (target < task.channels)
    if task.head == "l2_normalize":
        return (target != 0).any(dim=0)
    return ((target != 0) & torch.isfinite(target)).all(dim=0)


def fit_constants(train_set, tasks: Mapping[str, Task]) -> dict[str, torch.Tensor]:
    """task → the constant it predicts: a class id (0-d int) or a C-vector (float64)."""
    data = _unaugmented(train_set)
    counts = {t: torch.zeros(task.channels, dtype=torch.float64) for t, task in tasks.items()}
    pixels = dict.fromkeys(tasks, 0)
    for i in range(len(data)):
        sample = data[i]
        for name, task in tasks.items():
            target = sample[name]
            valid = _valid(task, target)
            if task.head == "log_softmax":
                counts[name] += torch.bincount(target[valid].long(), minlength=task.channels).double()
            else:
                counts[name] += target.double()[:, valid].sum(dim=1)
                pixels[name] += int(valid.sum())
    out = {}
    for name, task in tasks.items():
        if task.head == "log_softmax":
            out[name] = counts[name].argmax()
        elif task.head == "l2_normalize":
            out[name] = torch.nn.functional.normalize(counts[name], dim=0, eps=1e-12)
        else:
            out[name] = counts[name] / max(pixels[name], 1)
    return out


def _constant_prediction(task: Task, value: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    if task.head == "log_softmax":
        return torch.full((1, *hw), int(value), dtype=torch.int64)  # class ids: the meter takes them
    return value.float().view(1, -1, 1, 1).expand(1, value.numel(), *hw)


def score(dataset, tasks: Mapping[str, Task], constants: Mapping[str, torch.Tensor]) -> dict:
    """{task: {metric: v}} of the constant predictions on ``dataset``, pooled as in evaluation."""
    meters = {name: task.meter() for name, task in tasks.items()}
    for i in range(len(dataset)):
        sample = dataset[i]
        for name, task in tasks.items():
            target = sample[name]
            pred = _constant_prediction(task, constants[name], tuple(target.shape[-2:]))
            meters[name].update(pred, target[None])
    return {name: meter.compute() for name, meter in meters.items()}


def _signature(*datasets, tasks) -> tuple | None:
    parts = []
    for d in datasets:
        sig = d._signature() if hasattr(d, "_signature") else None
        if sig is None:
            return None
        parts.append(sig)
    return (*parts, tuple((t.name, t.channels, t.head) for t in tasks.values()))


def trivial_predictors(train_set, val_set, test_set, tasks: Mapping[str, Task]) -> dict:
    """``{"val": {task: {metric: v}}, "test": {...}, "predictor": {task: name}}``."""
    key = _signature(train_set, val_set, test_set, tasks=tasks)
    if key is not None and key in _cache:
        return copy.deepcopy(_cache[key])
    constants = fit_constants(train_set, tasks)
    result = {
        "val": score(val_set, tasks, constants),
        "test": score(test_set, tasks, constants),
        "predictor": {name: PREDICTOR_NAMES[task.head].format(task=name) for name, task in tasks.items()},
    }
    if key is not None:
        _cache[key] = copy.deepcopy(result)
    return result


def write_trivial(run_dir: str | Path, result: Mapping) -> Path:
    path = Path(run_dir) / TRIVIAL_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(path)
    return path


def read_trivial(run_dir: str | Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / TRIVIAL_FILE).read_text())
    except (OSError, ValueError):
        return None


def flat_metrics(result: Mapping, prefix: str = "trivial") -> dict[str, float]:
    """``trivial/<split>/<task>/<metric>`` → value (MLflow metric names of a sweep's parent run)."""
    return {
        f"{prefix}/{split}/{task}/{metric}": float(value)
        for split in ("val", "test")
        for task, metrics in result.get(split, {}).items()
        for metric, value in metrics.items()
    }
