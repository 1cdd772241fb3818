"""The standard set of tables and figures of a sweep (what the report shows), with captions.

Everything is ranked by the sweep's validation objective over full-budget trials (``Sweep.objective``,
``analysis.outcome``); test values of each trial's selected epoch are shown beside, never ranked.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import pandas as pd
from matplotlib.figure import Figure

from analysis import plots
from analysis.errors import AnalysisError
from analysis.explain import FORMULA, baseline_source, baseline_table
from analysis.importance import param_importance, searched_params
from analysis.labels import header
from analysis.objective import Objective
from analysis.outcome import counts, full_budget, outcome_label
from analysis.pareto import pareto_front
from analysis.seeds import (
    config_frame,
    config_table,
    is_seeded,
    plot_configurations,
    readable,
    spread_notes,
)
from analysis.sweep import Sweep
from analysis.tables import DEFAULT_GROUPS, rank_sensitivity, results_table, weighting_comparison

ID_COLUMNS = ("trial_id", "outcome", "status", "status_reason", "adapter", "weighting", "ranks")
TAIL_COLUMNS = ("epochs", "epochs_planned", "best_epoch", "trainable_params", "adapter_params")


@dataclass
class Summary:
    objective: str  # column the trials are ranked by ("" when nothing can be ranked)
    higher_is_better: bool
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)  # table or figure name -> caption
    notes: list[str] = field(default_factory=list)
    explain: list[str] = field(default_factory=list)  # Δb formula and baseline lines
    searched: list[str] = field(default_factory=list)


def trial_table(sweep: Sweep, objective: Objective | None, searched: list[str]) -> pd.DataFrame:
    """Every trial: outcome ("stopped@2"), groups, every searched param, the objective (val) and its
    test counterpart at the selected epoch; full-budget trials first, best first."""
    t = sweep.trials
    values = [objective.column, objective.test_column] if objective else []
    extra = [c for c in ("test_delta_b_metric",) if c in t.columns and c not in values]
    # the id columns already show these (adapter = adapter.type, ranks = R1/R2/R3 or the LoRA rank)
    shown = {"adapter.type", "weighting.method", "adapter.ranks", "adapter.r1", "adapter.r2", "adapter.r3"}
    params = [p for p in searched if p not in shown or "ranks" not in t.columns]
    keep = [c for c in (*ID_COLUMNS, *values, *extra, *params, *TAIL_COLUMNS) if c and c in t.columns]
    table = t[list(dict.fromkeys(keep))].copy()
    table["outcome"] = [outcome_label(r) for _, r in t.iterrows()]
    if objective:
        order = t["outcome"].ne("finished").astype(int) if "outcome" in t.columns else 0
        table = table.assign(_o=order).sort_values(
            ["_o", objective.column], ascending=[True, not objective.higher_is_better], kind="stable"
        )
        table = table.drop(columns="_o")
    return table.rename(columns={c: header(c) for c in values + extra}).reset_index(drop=True)


def _facts_notes(sweep: Sweep, objective: Objective) -> list[str]:
    n = counts(sweep.trials)
    notes = [
        f"ranked by {objective.key} ({objective.mode}; {objective.source}) on the validation split at each "
        "trial's selected epoch; test metrics of that epoch are shown beside and never choose anything",
        f"compared: the {n['finished']} full-budget trial(s); {n['stopped_early']} stopped early "
        f"(hollow markers, 'stopped@E', never ranked or averaged), {n['failed']} failed, "
        f"{n['interrupted']} interrupted",
    ]
    return notes


def summarize(sweep: Sweep, by: tuple[str, ...] = DEFAULT_GROUPS) -> Summary:
    """Results, trials, hyperparameters and importance, Pareto front, weighting, ranks, curves."""
    trials = sweep.trials
    objective = sweep.objective
    searched = searched_params(trials, sweep.param_columns)
    if objective is None:  # no trial got as far as an evaluation: statuses and curves only
        out = Summary("", True, notes=list(sweep.notes), searched=searched)
        out.tables["trials"] = trial_table(sweep, None, searched)
        with contextlib.suppress(AnalysisError):
            out.figures["learning_curves"] = plots.plot_learning_curves(sweep.history, trials)
        return out
    value, higher = objective.column, objective.higher_is_better
    out = Summary(value, higher, notes=[*_facts_notes(sweep, objective), *sweep.notes], searched=searched)
    if sweep.baseline:
        out.explain = [*FORMULA, baseline_source(sweep.tags)]
        out.tables["baseline"] = baseline_table(sweep.baseline, sweep.baseline_runs)
        out.captions["baseline"] = (
            "Single-task baseline B per task and metric (val and test split) with the run it came from; "
            "direction ↑/↓ gives the sign s of each metric's gain."
        )
    seeded = is_seeded(trials)
    # seeded: every per-group table and figure compares configurations (means over their seeds, std
    # as error bars); the trial table and learning curves keep one row / line per seed
    per = config_frame(trials) if seeded else trials
    unit = "configurations (each the mean over its seeds)" if seeded else "trials"
    bars = "; error bars: ± std over the seeds" if seeded else ""
    shown = "test" if any(c.startswith("test/") for c in per.columns) else "val"
    out.tables["results"] = results_table(
        per, by, shown, sweep.baseline, value, higher, trivial=sweep.trivial or None
    )
    out.captions["results"] = (
        f"Best full-budget {'configuration (mean over its seeds)' if seeded else 'trial'} per "
        f"({', '.join(by)}), ranked by {header(value)} [ranks]; the other "
        f"columns are {shown} metrics of the same trial and selected epoch (shown, not used to choose)."
        + (" Reference rows: single-task baseline (Δb = 0)" if sweep.baseline else "")
        + ("; trivial predictor (issue #16)." if sweep.trivial else "")
    )
    if seeded:  # search.seeds > 1: the configurations as mean ± std over their seeds
        configs = config_table(trials, value, higher, searched)
        n = int(trials.groupby("config").size().max())
        out.tables["configurations"] = readable(configs, value)
        out.captions["configurations"] = (
            f"One row per configuration (Optuna trial) trained with {n} seeds: mean and sample std over "
            f"the seeds of {header(value)} (validation, ranks) and of each test metric at each seed's "
            "selected epoch (shown, not used to choose); full-budget only when every seed ran its full "
            "budget. The tables below list each seed as its own trial."
        )
        out.notes += spread_notes(trials, configs, value)
        figures_first = {
            "configurations": (
                lambda: plot_configurations(configs, value),
                f"{header(value)} (validation) per configuration: mean ± std (error bar) over its {n} "
                "seeds; hollow: a seed was stopped early; dashed: the baseline (Δb = 0).",
            )
        }
    else:
        figures_first = {}
    out.tables["trials"] = trial_table(sweep, objective, searched)
    out.captions["trials"] = (
        "All trials with every searched hyperparameter; full-budget trials first (best first), then "
        f"stopped / failed ones. {header(value)} is the validation objective at the selected epoch."
    )
    figures: dict[str, tuple] = {
        **figures_first,
        "hyperparameters": (
            lambda: plots.plot_hyperparameters(per, searched, value, higher),
            f"{header(value)} (validation, selected epoch) against each searched hyperparameter; "
            f"filled: full-budget {unit}, hollow: stopped early (not final values){bars}.",
        ),
    }
    importance = param_importance(per, searched, value, higher)
    out.notes += importance.notes
    if not importance.table.empty:
        out.tables["importance"] = importance.table
        out.captions["importance"] = (
            f"Hyperparameter importance for {header(value)} by Optuna's FanovaImportanceEvaluator and "
            f"PedAnovaImportanceEvaluator on the {importance.trials} full-budget (COMPLETE) {unit}; "
            "each column sums to 1."
        )
        figures["importance"] = (
            lambda: plots.plot_importance(
                importance.table.rename(columns={"fanova": "importance"}), "fANOVA"
            ),
            f"fANOVA importance (Optuna) of the searched hyperparameters for {header(value)}.",
        )
    x, why = plots.pareto_x(per)
    if x is None:
        out.notes.append(f"Pareto view: {why}")
    else:
        front = pareto_front(full_budget(per), {value: objective.mode, x: "min"})
        keep = [
            "trial_id",
            "adapter",
            "weighting",
            "ranks",
            value,
            objective.test_column,
            x,
            "trainable_params",
        ]
        table = front[[c for c in dict.fromkeys(keep) if c and c in front.columns]].reset_index(drop=True)
        out.tables["pareto"] = table.rename(
            columns={c: header(c) for c in table.columns if "/" in c or "_" in c}
        )
        out.captions["pareto"] = (
            f"Non-dominated full-budget {unit}: max {header(value)} (validation), min {header(x)}"
            + (
                " (the adapter's parameters; decoders and norms are the same for every trial)."
                if x == "adapter_params"
                else "."
            )
        )
        figures["pareto"] = (
            lambda: plots.plot_pareto(per, x, value, maximize_y=higher),
            f"{header(value)} (validation) vs {header(x)}: Pareto front in red; hollow = stopped early.",
        )
    out.tables["weighting"] = weighting_comparison(per, value, higher)
    out.captions["weighting"] = (
        f"Per weighting method over full-budget {unit}: {header(value)} best/mean/std."
    )
    figures["weighting"] = (
        lambda: plots.plot_weighting(per, value, higher),
        f"{header(value)} (validation) per weighting method: bar = best full-budget trial; "
        "hollow = stopped early.",
    )
    ranks = rank_sensitivity(per, value, higher)
    if not ranks.empty:
        out.tables["ranks"] = ranks
        out.captions["ranks"] = f"ToRA ranks R1/R2/R3 over full-budget {unit}: {header(value)} best/mean/std."
        figures["rank_sensitivity"] = (
            lambda: plots.plot_rank_sensitivity(per, value, higher),
            f"{header(value)} (validation) against each ToRA rank; "
            "line = best full-budget trial per setting.",
        )
    figures["learning_curves"] = (
        lambda: plots.plot_learning_curves(sweep.history, trials),
        "Training loss and validation objective per epoch, one line per trial (dashed: stopped early).",
    )
    for name, (make, caption) in figures.items():
        try:
            out.figures[name] = make()
            out.captions[f"figure:{name}"] = caption
        except AnalysisError as err:
            out.notes.append(f"figure '{name}' skipped: {err}")
    return out
