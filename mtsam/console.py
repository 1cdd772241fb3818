"""Plain-text rendering of parameter summaries, per-epoch metric tables and run summaries."""

from __future__ import annotations

import math
from collections.abc import Mapping

from .tasks import Task


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


def parameter_table(summary: Mapping[str, int]) -> str:
    total = summary["total"]
    lines = ["parameters:"]
    for key in ("total", "trainable", "adapter", "encoder_norms", "no_mask", "decoders", "frozen"):
        if key in summary:
            lines.append(f"  {key:<14}{summary[key]:>14,}  ({100 * summary[key] / total:5.2f} %)")
    return "\n".join(lines)


def epoch_table(record: Mapping, tasks: Mapping[str, Task], split: str = "val") -> str:
    """One block per epoch: losses, lr, speed, then a row per task with its metrics (↑/↓)."""
    head = (
        f"epoch {record['epoch']}: loss {_fmt(record.get('train/loss/total'))}  "
        f"lr {_fmt(record.get('train/lr'))}  {_fmt(record.get('train/images_per_s'))} img/s  "
        f"{_fmt(record.get('train/epoch_time_s'))} s"
    )
    lines = [head]
    for name, task in tasks.items():
        cells = [
            f"{metric}{'↑' if up else '↓'} {_fmt(record.get(f'{split}/{name}/{metric}'))}"
            for metric, up in task.metrics.items()
        ]
        lines.append(
            f"  {split} {name:<10} loss {_fmt(record.get(f'train/loss/{name}')):<8} " + "  ".join(cells)
        )
    if f"{split}/delta_b_task" in record:
        lines.append(
            f"  {split} Δb task-avg {_fmt(record[f'{split}/delta_b_task'])} %  "
            f"metric-avg {_fmt(record[f'{split}/delta_b_metric'])} %"
        )
    return "\n".join(lines)


def trivial_table(trivial: Mapping, tasks: Mapping[str, Task], split: str = "val") -> str:
    """One row per task: the trivial predictor's metrics on ``split`` (the floor a model must beat)."""
    lines = []
    for name, task in tasks.items():
        values = trivial.get(split, {}).get(name, {})
        cells = [f"{m}{'↑' if up else '↓'} {_fmt(values.get(m))}" for m, up in task.metrics.items()]
        predictor = trivial.get("predictor", {}).get(name, "")
        lines.append(f"  {split} {name:<10} trivial ({predictor}): " + "  ".join(cells))
    return "\n".join(lines)


def summary_text(summary: Mapping, tasks: Mapping[str, Task]) -> str:
    best = summary.get("best")
    lines = [
        f"run directory: {summary['run_dir']}",
        f"epochs: {summary['epochs']}  optimiser steps: {summary['steps']}",
    ]
    if best:
        if best["metric"] == "last_epoch":
            lines.append(f"selected epoch {best['epoch']}: {summary.get('selection', 'last epoch')}")
        else:
            lines.append(f"selected epoch {best['epoch']} by {best['metric']} = {_fmt(best['value'])}")
        record = {"epoch": best["epoch"], **best["test"]}
        lines.append(epoch_table(record, tasks, split="test").split("\n", 1)[1])
        if summary.get("trivial"):
            lines.append(trivial_table(summary["trivial"], tasks, split="test"))
        lines.append(f"best adapter: {summary['run_dir']}/best_adapter.pt")
    return "\n".join(lines)
