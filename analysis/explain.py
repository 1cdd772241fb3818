"""What Δb means in this sweep: the formula, both averages, the sign per metric, the baseline.

Δb (Maninis et al. 2019; LibMTL form) of a model M against the single-task baselines B, in %:

    gain(t, m) = s(t, m) · (M(t, m) − B(t, m)) / B(t, m),   s = +1 if higher is better (↑), −1 if ↓
    Δb task-avg   = 100 · mean over tasks t of ( mean over the metrics m of t of gain(t, m) )
    Δb metric-avg = 100 · mean over all (t, m) of gain(t, m)

Positive = better than the single-task baselines; 0 = as good. Task-averaged weighs every task
equally (NYUv2 normals have 5 metrics, segmentation 2); metric-averaged weighs every metric equally.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from analysis.delta import SPLITS, direction
from analysis.labels import UNITS

FORMULA = [
    "gain(t, m) = s(t, m) · (M(t, m) − B(t, m)) / B(t, m), with s = +1 for ↑ metrics, −1 for ↓ metrics",
    "Δb task-avg = 100 · mean over tasks of the mean gain of the task's metrics "
    "(LibMTL; every task weighs the same)",
    "Δb metric-avg = 100 · mean gain over all metrics (every metric weighs the same)",
    "Δb > 0: better than the single-task baselines; Δb = 0: as good (the zero line of every Δb axis)",
]


def baseline_table(
    baseline: Mapping[str, Any] | None, baseline_runs: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per task/metric: direction, unit, val and test baseline value, the run it came from
    (with ``search.seeds``: the mean, its std and n over the seeds' runs, all listed)."""
    if not baseline:
        return pd.DataFrame(columns=["task", "metric", "direction", "unit", "val", "test", "run_id"])
    runs: dict[str, str] = {}
    if baseline_runs is not None and not baseline_runs.empty and "task" in baseline_runs.columns:
        for t, r in zip(baseline_runs["task"], baseline_runs["run_id"]):
            runs[str(t)] = f"{runs[str(t)]}, {r}" if str(t) in runs else str(r)
    std = baseline.get("std") or {}
    rows = []
    tasks = dict.fromkeys(t for s in SPLITS for t in (baseline.get(s) or {}))
    for task in tasks:
        metrics = dict.fromkeys(m for s in SPLITS for m in (baseline.get(s) or {}).get(task, {}))
        for metric in metrics:
            d = direction(task, metric, baseline)
            rows.append(
                {
                    "task": task,
                    "metric": metric,
                    "direction": {True: "↑ higher is better", False: "↓ lower is better"}.get(d, "?"),
                    "unit": UNITS.get(metric, ""),
                    **{s: (baseline.get(s) or {}).get(task, {}).get(metric) for s in ("val", "test")},
                    **{f"{s} std": std.get(s, {}).get(task, {}).get(metric) for s in ("val", "test") if std},
                    **({"seeds": baseline.get("seeds")} if std else {}),
                    "run_id": runs.get(task, "–"),
                }
            )
    return pd.DataFrame(rows)


def baseline_source(tags: Mapping[str, str]) -> str:
    """One line: which baseline the sweep used (parent tags ``mtsam.baseline*``)."""
    kind = tags.get("mtsam.baseline") or tags.get("mtsam.baseline_key") or "baseline.json of the sweep"
    runs = tags.get("mtsam.baseline_runs")
    return f"baseline: {kind}" + (f"; runs {runs}" if runs else "")
