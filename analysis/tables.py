"""Paper-style summary tables of a trial table (``Sweep.trials``).

Every table ranks by the sweep's validation objective (``analysis.objective``) over the trials that
ran their full budget (``analysis.outcome``); test metrics of each picked trial's selected epoch are
shown beside it and never choose anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from analysis.delta import direction, metric_columns, resolve_split
from analysis.errors import AnalysisError
from analysis.labels import header
from analysis.objective import resolve_objective
from analysis.outcome import full_budget

DEFAULT_GROUPS = ("adapter", "weighting", "ranks")
ARROWS = {True: "↑", False: "↓", None: ""}
PARAMS_HEADER = "trainable params"


def primary_objective(trials: pd.DataFrame, split: str | None = None, tags: Mapping | None = None):
    """(column, higher_is_better) that ranks trials: the validation objective at the selected epoch
    (``val_delta_b_task`` with a baseline, else the first validation metric). ``split`` is ignored:
    ranking is always on validation."""
    objective = resolve_objective(trials, tags)
    return objective.column, objective.higher_is_better


def _ranked(trials: pd.DataFrame, value: str, higher: bool, exclude_failed: bool, full: bool) -> pd.DataFrame:
    if value not in trials.columns:
        raise AnalysisError(f"no column '{value}' in the trials table")
    rows = full_budget(trials) if full else trials
    rows = rows[rows[value].notna()]
    if exclude_failed and "status" in rows.columns:
        rows = rows[rows["status"] != "FAILED"]
    return rows.sort_values(value, ascending=not higher, kind="stable")


def best_per_group(
    trials: pd.DataFrame,
    by: Sequence[str] = DEFAULT_GROUPS,
    value: str | None = None,
    higher_is_better: bool | None = None,
    exclude_failed: bool = True,
    full_budget_only: bool = True,
) -> pd.DataFrame:
    """The best trial of every group (rows of ``trials``), best group first. ``value`` defaults to
    the validation objective; only full-budget trials compete unless ``full_budget_only=False``."""
    if value is None:
        value, default_higher = primary_objective(trials)
        higher_is_better = default_higher if higher_is_better is None else higher_is_better
    higher = True if higher_is_better is None else higher_is_better
    missing = [c for c in by if c not in trials.columns]
    if missing:
        raise AnalysisError(f"cannot group by {missing}: not columns of the trials table")
    ranked = _ranked(trials, value, higher, exclude_failed, full_budget_only)
    if not by:
        return ranked.head(1)
    return ranked.groupby(list(by), dropna=False, sort=False).head(1)


def _header(task: str, metric: str, baseline: Mapping[str, Any] | None, split: str = "") -> str:
    arrow = ARROWS[direction(task, metric, baseline)]
    return f"{split} {task} {metric} {arrow}".strip()


def results_table(
    trials: pd.DataFrame,
    by: Sequence[str] = DEFAULT_GROUPS,
    split: str | None = None,
    baseline: Mapping[str, Any] | None = None,
    value: str | None = None,
    higher_is_better: bool | None = None,
    trivial: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Best full-budget trial per group by ``value`` (default: the validation objective): group
    columns, ``trial``, ``epoch`` (selected), the ranking value, then the shown ``split``'s (default
    test) per-task metrics and Δb of that epoch, trainable params. Reference rows lead: the
    single-task baseline (with ``baseline``) and the trivial predictor (with ``trivial``)."""
    if value is None:
        value, higher_is_better = primary_objective(trials)
    higher = True if higher_is_better is None else higher_is_better
    split = resolve_split(trials, split)
    best = best_per_group(trials, by, value, higher)
    columns = metric_columns(trials, split)
    table = pd.DataFrame(index=best.index)
    for col in by:
        table[col] = best[col]
    table["trial"] = best["trial_id"]
    epoch = best["best_epoch"] if "best_epoch" in best.columns else pd.NA
    table["epoch"] = pd.Series(epoch, index=best.index, dtype="Int64")
    rank_header = f"{header(value)} [ranks]"
    table[rank_header] = best[value]
    seeded = f"{value} std" in best.columns  # configurations of a seeded sweep: means, with their std
    if seeded:
        table["± std"] = best[f"{value} std"]
        table["seeds"] = best["seeds"]
    for task, metrics in columns.items():
        for metric, column in metrics.items():
            table[_header(task, metric, baseline, split)] = best[column]
    deltas = {f"{split}_{c}": header(f"{split}_{c}") for c in ("delta_b_task", "delta_b_metric")}
    for column, head in deltas.items():
        if column in best.columns and column != value:
            table[head] = best[column]
            if seeded and f"{column} std" in best.columns:
                table[f"{head} ± std"] = best[f"{column} std"]
    params = best["trainable_params"] if "trainable_params" in best.columns else pd.NA
    table[PARAMS_HEADER] = pd.Series(params, index=best.index, dtype="Int64")
    table = table.reset_index(drop=True)
    refs = []
    for name, values in (("single-task baseline", baseline), ("trivial predictor", trivial)):
        part = (values or {}).get(split)
        if not part:
            continue
        row: dict[str, Any] = {col: name if i == 0 else "" for i, col in enumerate(by)}
        row["trial"] = "" if by else name
        for task, metrics in columns.items():
            for metric in metrics:
                row[_header(task, metric, baseline, split)] = part.get(task, {}).get(metric, math.nan)
        if name == "single-task baseline":
            row.update({h: 0.0 for h in deltas.values() if h in table.columns})
            if "delta_b" in value:
                row[rank_header] = 0.0  # the baseline against itself, on any split
        elif baseline and baseline.get(split):
            row.update(_reference_delta(part, baseline, split, deltas, table.columns))
            ranked_split = "val" if value.startswith(("val_", "best/val/")) else split
            key = value.removeprefix(f"{ranked_split}_")
            val_part = (values or {}).get(ranked_split)
            if key in ("delta_b_task", "delta_b_metric") and val_part and baseline.get(ranked_split):
                found = _reference_delta(val_part, baseline, ranked_split, {value: "x"}, ["x"])
                row[rank_header] = found.get("x", math.nan)
        refs.append(row)
    if not refs:
        return table
    first = pd.DataFrame(refs, columns=table.columns).astype({PARAMS_HEADER: "Int64", "epoch": "Int64"})
    return pd.concat([first, table], ignore_index=True)


def _reference_delta(values, baseline, split, headers, columns) -> dict[str, float]:
    from mtsam.metrics import delta_b

    used = {
        t: {m: v for m, v in ms.items() if m in baseline[split].get(t, {})}
        for t, ms in values.items()
        if t in baseline[split]
    }
    used = {t: ms for t, ms in used.items() if ms}
    if not used:
        return {}
    dirs = {t: {m: direction(t, m, baseline) for m in ms} for t, ms in used.items()}
    if any(d is None for ms in dirs.values() for d in ms.values()):
        return {}
    result = delta_b(used, baseline[split], dirs)
    out = {}
    for column, head in headers.items():
        key = column.removeprefix(f"{split}_")
        if head in columns:
            out[head] = result[key]
    return out


def _setting_stats(trials: pd.DataFrame, key: str, value: str, higher: bool) -> pd.DataFrame:
    rows = trials[trials[key].notna() & trials[value].notna()]
    if rows.empty:
        return pd.DataFrame(columns=[key, "trials", "best", "mean", "std", "best_trial"])
    grouped = rows.groupby(key, sort=True)[value]
    out = grouped.agg(trials="count", best="max" if higher else "min", mean="mean", std="std")
    best_rows = grouped.idxmax() if higher else grouped.idxmin()
    out["best_trial"] = rows.loc[best_rows, "trial_id"].to_numpy()
    return out.reset_index()


def _compared(trials: pd.DataFrame, full_budget_only: bool) -> pd.DataFrame:
    rows = full_budget(trials) if full_budget_only else trials
    return rows[rows["status"] != "FAILED"] if "status" in rows.columns else rows


def rank_sensitivity(
    trials: pd.DataFrame,
    value: str | None = None,
    higher_is_better: bool = True,
    full_budget_only: bool = True,
) -> pd.DataFrame:
    """Long table: for each ToRA rank (R1, R2, R3) and setting, #trials and best/mean/std of ``value``
    (default: the validation objective) over full-budget trials."""
    if value is None:
        value, higher_is_better = primary_objective(trials)
    kept = _compared(trials, full_budget_only)
    columns = ["rank", "setting", "trials", "best", "mean", "std", "best_trial"]
    parts = []
    for rank in ("R1", "R2", "R3"):
        if rank in kept.columns:
            stats = _setting_stats(kept, rank, value, higher_is_better).rename(columns={rank: "setting"})
            stats.insert(0, "rank", rank)
            parts.append(stats)
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame(columns=columns)
    out = pd.concat(parts, ignore_index=True)[columns]
    out["setting"] = out["setting"].astype("int64")
    return out


def weighting_comparison(
    trials: pd.DataFrame,
    value: str | None = None,
    higher_is_better: bool = True,
    full_budget_only: bool = True,
) -> pd.DataFrame:
    """Per weighting method over full-budget trials: #trials, best/mean/std of ``value`` (default:
    the validation objective), the best trial, and how many of its trials stopped early or failed
    (counted, not averaged); best method first."""
    if value is None:
        value, higher_is_better = primary_objective(trials)
    if "weighting" not in trials.columns:
        raise AnalysisError("no 'weighting' column (tag mtsam.weighting / param weighting.method)")
    stats = _setting_stats(_compared(trials, full_budget_only), "weighting", value, higher_is_better)
    methods = sorted(trials["weighting"].dropna().astype(str).unique())
    absent = [m for m in methods if m not in set(stats["weighting"])]
    if absent:  # a method with no full-budget trial is listed, with no value
        empty = pd.DataFrame({"weighting": absent, "trials": 0})
        stats = (
            pd.concat([stats, empty], ignore_index=True)
            if len(stats)
            else empty.reindex(columns=stats.columns)
        )
        stats["trials"] = stats["trials"].fillna(0).astype("int64")
    if "outcome" in trials.columns:
        for outcome, name in (("stopped_early", "stopped early"), ("failed", "failed")):
            n = trials[trials["outcome"] == outcome].groupby("weighting").size()
            stats[name] = stats["weighting"].map(n).fillna(0).astype("int64")
    return stats.sort_values("best", ascending=not higher_is_better, kind="stable").reset_index(drop=True)
