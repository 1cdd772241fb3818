"""Pareto front of trials: exactly the non-dominated ones (default: max validation Δb, min trainable
params). Pass ``full_budget(trials)`` (``analysis.outcome``) to leave early-stopped trials out."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError

DEFAULT_OBJECTIVES = None  # the trials' validation objective (analysis.objective) and min trainable params


def default_objectives(trials: pd.DataFrame) -> dict[str, str]:
    """{validation objective: its sense, "trainable_params": "min"}: test metrics never choose."""
    from analysis.objective import resolve_objective

    objective = resolve_objective(trials)
    return {objective.column: objective.mode, "trainable_params": "min"}


def _oriented(trials: pd.DataFrame, objectives: Mapping[str, str]) -> np.ndarray:
    """Objective matrix flipped so that larger is better in every column."""
    columns = []
    for column, sense in objectives.items():
        if column not in trials.columns:
            raise AnalysisError(f"objective '{column}' is not a column of the trials table")
        if sense not in ("max", "min"):
            raise AnalysisError(f"objective '{column}': sense must be 'max' or 'min', got '{sense}'")
        values = pd.to_numeric(trials[column], errors="coerce").astype(float).to_numpy()
        columns.append(values if sense == "max" else -values)
    return np.column_stack(columns) if columns else np.empty((len(trials), 0))


def pareto_mask(trials: pd.DataFrame, objectives: Mapping[str, str] | None = DEFAULT_OBJECTIVES) -> pd.Series:
    """True for trials no other trial dominates (≥ in every objective, > in one).

    Trials missing an objective value are never on the front and dominate nothing; ties (equal
    points) are all kept, as neither dominates the other.
    """
    if objectives is None:
        objectives = default_objectives(trials)
    if not objectives:
        raise AnalysisError("give at least one objective")
    points = _oriented(trials, objectives)
    valid = ~np.isnan(points).any(axis=1)
    mask = valid.copy()
    for i in np.flatnonzero(valid):
        others = points[valid]
        dominated = (others >= points[i]).all(axis=1) & (others > points[i]).any(axis=1)
        mask[i] = not dominated.any()
    return pd.Series(mask, index=trials.index, name="pareto")


def pareto_front(
    trials: pd.DataFrame, objectives: Mapping[str, str] | None = DEFAULT_OBJECTIVES
) -> pd.DataFrame:
    """The non-dominated trials, best-first along the last objective (e.g. fewest params first)."""
    objectives = objectives or default_objectives(trials)
    front = trials[pareto_mask(trials, objectives)]
    last, sense = list(objectives.items())[-1]
    return front.sort_values(last, ascending=sense == "min", kind="stable")
