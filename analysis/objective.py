"""The sweep's own objective: what the search optimised, hence what the analysis ranks by.

The parent run's tags ``mtsam.objective`` (e.g. ``val/delta_b_task``) and ``mtsam.objective_mode``
(``max``|``min``) name it; without them: ``val/delta_b_task`` (max) when Δb can be computed, else
the first validation metric of the contract order. Ranking is always on the **validation** split at
each trial's selected epoch; the matching test value is only shown beside it, never used to choose.

Trial-table columns (``analysis.frames``/``analysis.sweep``): ``val_delta_b_task`` etc. are Δb
recomputed from the raw metrics of the selected epoch; ``best/val/<task>/<metric>`` the raw val
metrics there; ``test/<task>/<metric>`` the test metrics of that same epoch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from analysis.delta import DIRECTIONS, direction, metric_columns
from analysis.errors import AnalysisError

OBJECTIVE_TAG, MODE_TAG = "mtsam.objective", "mtsam.objective_mode"
DEFAULT_KEY = "val/delta_b_task"
_DELTA = ("delta_b_task", "delta_b_metric")


@dataclass(frozen=True)
class Objective:
    key: str  # the sweep's name for it, e.g. "val/delta_b_task" or "val/semantic/miou"
    higher_is_better: bool
    column: str  # trials column holding the val value at the selected epoch
    test_column: str | None  # trials column holding the same quantity on test (shown, never ranked)
    source: str  # where the choice came from (shown in the report)

    @property
    def mode(self) -> str:
        return "max" if self.higher_is_better else "min"

    @property
    def name(self) -> str:  # "delta_b_task", "semantic/miou"
        return self.key.removeprefix("val/")


def columns_for(key: str) -> tuple[str, str]:
    """(val column, test column) of an objective key."""
    name = key.removeprefix("val/").removeprefix("test/")
    if name in _DELTA:
        return f"val_{name}", f"test_{name}"
    return f"best/val/{name}", f"test/{name}"


def _usable(trials: pd.DataFrame, column: str) -> bool:
    return column in trials.columns and trials[column].notna().any()


def resolve_objective(trials: pd.DataFrame, tags: Mapping[str, str] | None = None) -> Objective:
    """The objective of the sweep (parent tags) or the default, as trial-table columns."""
    # a trials table of a Sweep carries the sweep's objective tags in .attrs (analysis.sweep)
    tags = tags or {k: v for k, v in trials.attrs.items() if k in (OBJECTIVE_TAG, MODE_TAG)}
    key = tags.get(OBJECTIVE_TAG)
    if key:
        mode = tags.get(MODE_TAG, "max")
        if mode not in ("max", "min"):
            raise AnalysisError(f"parent tag {MODE_TAG}={mode!r}; expected 'max' or 'min'")
        if not key.startswith("val/"):
            raise AnalysisError(f"parent tag {OBJECTIVE_TAG}={key!r}: the analysis ranks on validation keys")
        column, test = columns_for(key)
        if _usable(trials, column):
            return Objective(key, mode == "max", column, test if test in trials.columns else None, "sweep")
        fallback = f"its column {column} is empty (no baseline?)"
    else:
        fallback = None
    column, test = columns_for(DEFAULT_KEY)
    if _usable(trials, column):
        why = "default" if fallback is None else f"default: the sweep's {key} {fallback}"
        return Objective(DEFAULT_KEY, True, column, test if test in trials.columns else None, why)
    for task, metrics in metric_columns(trials, "val").items():
        for metric, col in metrics.items():
            d = direction(task, metric)
            if d is not None and trials[col].notna().any():
                key = f"val/{task}/{metric}"
                test = f"test/{task}/{metric}"
                why = "first validation metric: no Δb (no baseline)"
                return Objective(key, d, col, test if test in trials.columns else None, why)
    known = ", ".join(f"val/{t}/{m}" for t, ms in DIRECTIONS.items() for m in ms)
    raise AnalysisError(f"no trial has a validation metric to rank by; expected Δb or one of {known}")
