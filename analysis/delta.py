"""Δb (multi-task gain over a single-task baseline) recomputed from a trial table's raw metrics.

The arithmetic lives in ``mtsam.metrics.delta_b`` (task-averaged LibMTL form and metric-averaged
form); this module only picks the right columns and baseline split. Trial-table column names:
``test/<task>/<metric>`` = test metric of the selected epoch, ``best/val/<task>/<metric>`` = val
metric at the selected epoch (see ``analysis.frames``).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from typing import Any

import pandas as pd

from analysis.errors import AnalysisError

# Directions from docs/TRACKING.md (True = higher is better); baseline.json's "directions" win.
DIRECTIONS: dict[str, dict[str, bool]] = {
    "semantic": {"miou": True, "pix_acc": True},
    "depth": {"abs_err": False, "rel_err": False},
    "normal": {
        "mean": False,
        "median": False,
        "within_11.25": True,
        "within_22.5": True,
        "within_30": True,
    },
}
SPLITS = ("test", "val")
DELTA_COLUMNS = ("delta_b_task", "delta_b_metric")
_TASK_METRIC = re.compile(r"(?P<task>[^/]+)/(?P<metric>[^/]+)")


def split_prefix(split: str) -> str:
    """Column prefix holding the *selected epoch's* metrics of a split."""
    if split not in SPLITS:
        raise AnalysisError(f"unknown split '{split}'; expected one of {list(SPLITS)}")
    return "test/" if split == "test" else "best/val/"


def metric_columns(trials: pd.DataFrame, split: str) -> dict[str, dict[str, str]]:
    """{task: {metric: column}} of the split's per-task metrics, tasks/metrics in contract order."""
    prefix = split_prefix(split)
    found: dict[str, dict[str, str]] = {}
    for column in trials.columns:
        if not column.startswith(prefix):
            continue
        match = _TASK_METRIC.fullmatch(column[len(prefix) :])
        if match:  # skips e.g. test/delta_b_task
            found.setdefault(match["task"], {})[match["metric"]] = column
    return {t: dict(sorted(ms.items(), key=lambda kv: _order(t, kv[0]))) for t, ms in _sorted_tasks(found)}


def _order(task: str, metric: str) -> tuple[int, str]:
    known = list(DIRECTIONS.get(task, {}))
    return (known.index(metric), "") if metric in known else (len(known), metric)


def _sorted_tasks(found: dict[str, Any]) -> list[tuple[str, Any]]:
    known = list(DIRECTIONS)
    return sorted(found.items(), key=lambda kv: (known.index(kv[0]) if kv[0] in known else len(known), kv[0]))


def resolve_split(trials: pd.DataFrame, split: str | None = None) -> str:
    """``split`` or, when None, "test" if the trials carry test metrics, else "val"."""
    if split is not None:
        split_prefix(split)
        return split
    return "test" if metric_columns(trials, "test") else "val"


def direction(task: str, metric: str, baseline: Mapping[str, Any] | None = None) -> bool | None:
    """True if higher is better, False if lower is, None if unknown."""
    given = (baseline or {}).get("directions", {}).get(task, {})
    if metric in given:
        return bool(given[metric])
    return DIRECTIONS.get(task, {}).get(metric)


def normalise_baseline(baseline: Mapping[str, Any], split: str = "test") -> dict[str, Any]:
    """Accept baseline.json's form ({"val", "test", "directions"}, and with search.seeds "std" and
    "seeds", which Δb does not use) or one split's {task: {metric: v}}."""
    if not isinstance(baseline, Mapping) or not baseline:
        raise AnalysisError("baseline must be a non-empty dict like baseline.json ({'test': {task: {...}}})")
    if set(baseline) <= {*SPLITS, "directions", "std", "seeds"}:
        return copy.deepcopy(dict(baseline))
    split_prefix(split)
    return {split: copy.deepcopy(dict(baseline))}


def _directions(baseline: Mapping[str, Any], tasks: Mapping[str, Mapping[str, Any]]) -> dict:
    out: dict[str, dict[str, bool]] = {}
    for task, metrics in tasks.items():
        for metric in metrics:
            d = direction(task, metric, baseline)
            if d is None:
                raise AnalysisError(
                    f"no direction for metric '{task}/{metric}': add it to the baseline's 'directions' "
                    "(true = higher is better)"
                )
            out.setdefault(task, {})[metric] = d
    return out


def delta_b_frame(trials: pd.DataFrame, baseline: Mapping[str, Any], split: str = "test") -> pd.DataFrame:
    """Recomputed ``delta_b_task`` / ``delta_b_metric`` (percent) per trial row.

    The baseline's metrics of ``split`` define the metric set; baseline tasks/metrics the sweep never
    logged are skipped. A trial missing any of the remaining values (failed early) gets NaN.
    """
    full = normalise_baseline(baseline, split)
    base = full.get(split)
    if not base:
        raise AnalysisError(f"baseline has no '{split}' metrics (it has {sorted(full)})")
    columns = metric_columns(trials, split)
    used = {t: {m: columns[t][m] for m in ms if m in columns[t]} for t, ms in base.items() if t in columns}
    used = {t: ms for t, ms in used.items() if ms}
    if not used:
        raise AnalysisError(
            f"no {split} metric of the baseline ({_names(base)}) appears in the trials ({_names(columns)})"
        )
    dirs = _directions(full, used)
    from mtsam.metrics import delta_b  # lazy: importing mtsam pulls in torch and segment_anything

    rows = []
    for _, row in trials.iterrows():
        values = {t: {m: row[c] for m, c in ms.items()} for t, ms in used.items()}
        if any(_missing(v) for ms in values.values() for v in ms.values()):
            rows.append(dict.fromkeys(DELTA_COLUMNS, math.nan))
            continue
        try:
            rows.append(delta_b(values, base, dirs))
        except ValueError as err:  # mtsam ConfigError, e.g. a baseline value of 0
            raise AnalysisError(f"cannot compute Δb against the baseline: {err}") from err
    return pd.DataFrame(rows, index=trials.index, columns=list(DELTA_COLUMNS), dtype=float)


def add_delta_b(
    trials: pd.DataFrame, baseline: Mapping[str, Any] | None, split: str = "test"
) -> pd.DataFrame:
    """Copy of ``trials`` with the Δb columns recomputed (dropped when ``baseline`` is None)."""
    out = trials.drop(columns=[c for c in DELTA_COLUMNS if c in trials.columns])
    if baseline is None:
        return out
    return pd.concat([out, delta_b_frame(out, baseline, split)], axis=1)


def baseline_from_runs(runs: pd.DataFrame, directions: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """baseline.json-shaped dict from single-task baseline runs (one row per run, tag ``task``)."""
    if runs.empty or "task" not in runs.columns:
        raise AnalysisError("no baseline runs (tag mtsam.role=baseline with mtsam.task) to build a baseline")
    out: dict[str, Any] = {}
    for split in SPLITS:
        columns = metric_columns(runs, split)
        for _, row in runs.iterrows():
            task = row["task"]
            for metric, column in columns.get(task, {}).items():
                if not _missing(row[column]):
                    out.setdefault(split, {}).setdefault(task, {})[metric] = float(row[column])
    if directions:
        out["directions"] = copy.deepcopy(dict(directions))
    return out


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _names(tasks: Mapping[str, Mapping[str, Any]]) -> str:
    return ", ".join(f"{t}/{m}" for t, ms in tasks.items() for m in ms) or "none"
