"""Human names of trial-table columns, with split, unit and direction (↑ higher is better).

One place, so tables, axis labels and captions say the same thing: ``val_delta_b_task`` →
"val Δb task-avg (%) ↑", ``test/depth/abs_err`` → "test depth abs_err (m) ↓".
"""

from __future__ import annotations

from analysis.delta import direction

UNITS = {  # NYUv2/CityScapes conventions of the MTAN release
    "miou": "fraction",
    "pix_acc": "fraction",
    "abs_err": "m",
    "rel_err": "fraction",
    "mean": "°",
    "median": "°",
    "within_11.25": "fraction",
    "within_22.5": "fraction",
    "within_30": "fraction",
}
_ARROW = {True: " ↑", False: " ↓", None: ""}
_FIXED = {
    "delta_b_task": "Δb task-avg (%) ↑",
    "delta_b_metric": "Δb metric-avg (%) ↑",
    "trainable_params": "trainable parameters (count) ↓",
    "adapter_params": "adapter parameters (count) ↓",
    "total_params": "total parameters (count)",
    "train/loss/total": "train loss, total (weighted sum) ↓",
    "epoch": "epoch",
    "train.lr": "train.lr (learning rate)",
}


def header(column: str) -> str:
    """Short label of a column for tables, legends and axes."""
    if column in _FIXED:
        return _FIXED[column]
    for split in ("val", "test"):
        if column.startswith(f"{split}_") and column.removeprefix(f"{split}_") in _FIXED:
            return f"{split} {_FIXED[column.removeprefix(f'{split}_')]}"
    name = column.removeprefix("best/")
    parts = name.split("/")
    if len(parts) == 3 and parts[0] in ("val", "test", "train"):
        split, task, metric = parts
        unit = UNITS.get(metric)
        return f"{split} {task} {metric}{f' ({unit})' if unit else ''}{_ARROW[direction(task, metric)]}"
    if len(parts) == 2 and parts[0] in ("val", "test") and parts[1] in _FIXED:
        return f"{parts[0]} {_FIXED[parts[1]]}"
    return column


def is_delta_b(column: str) -> bool:
    return "delta_b" in column
