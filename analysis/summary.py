"""The standard set of tables and figures of a sweep (what the report shows)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import pandas as pd
from matplotlib.figure import Figure

from analysis import plots
from analysis.errors import AnalysisError
from analysis.pareto import pareto_front
from analysis.sweep import Sweep
from analysis.tables import (
    DEFAULT_GROUPS,
    primary_objective,
    rank_sensitivity,
    results_table,
    weighting_comparison,
)

TRIAL_COLUMNS = (
    "trial_id",
    "status",
    "status_reason",
    "adapter",
    "weighting",
    "ranks",
    "epochs",
    "best_epoch",
    "trainable_params",
    "delta_b_task",
    "delta_b_metric",
)


@dataclass
class Summary:
    objective: str  # column the trials are ranked by
    higher_is_better: bool
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def summarize(sweep: Sweep, by: tuple[str, ...] = DEFAULT_GROUPS) -> Summary:
    """Results, Pareto front, weighting comparison, rank sensitivity, trials; figures where the sweep
    has what they need (a skipped one leaves a note instead)."""
    trials = sweep.trials
    try:
        value, higher = primary_objective(trials, sweep.split)
    except AnalysisError as err:  # no trial got as far as an evaluation: statuses and curves only
        out = Summary("", True, notes=[*sweep.notes, f"no ranking: {err}"])
        out.tables["trials"] = trials[[c for c in TRIAL_COLUMNS if c in trials.columns]]
        with contextlib.suppress(AnalysisError):
            out.figures["learning_curves"] = plots.plot_learning_curves(sweep.history, trials)
        return out
    out = Summary(value, higher, notes=list(sweep.notes))
    if value != "delta_b_task":
        out.notes.append(f"trials are ranked by {value} ({'higher' if higher else 'lower'} is better)")
    sense = "max" if higher else "min"
    front = pareto_front(trials, {value: sense, "trainable_params": "min"})
    out.tables["results"] = results_table(trials, by, sweep.split, sweep.baseline, value)
    keep = ["trial_id", "adapter", "weighting", "ranks", value, "trainable_params"]
    out.tables["pareto"] = front[[c for c in dict.fromkeys(keep) if c in front.columns]].reset_index(
        drop=True
    )
    out.tables["weighting"] = weighting_comparison(trials, value, higher)
    ranks = rank_sensitivity(trials, value, higher)
    if not ranks.empty:
        out.tables["ranks"] = ranks
    out.tables["trials"] = trials[[c for c in TRIAL_COLUMNS if c in trials.columns]]
    makers = {
        "pareto": lambda: plots.plot_pareto(trials, "trainable_params", value, maximize_y=higher),
        "weighting": lambda: plots.plot_weighting(trials, value, higher),
        "rank_sensitivity": lambda: plots.plot_rank_sensitivity(trials, value, higher),
        "learning_curves": lambda: plots.plot_learning_curves(sweep.history, trials),
    }
    for name, make in makers.items():
        try:
            out.figures[name] = make()
        except AnalysisError as err:
            out.notes.append(f"figure '{name}' skipped: {err}")
    return out
