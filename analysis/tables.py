"""Paper-style summary tables of a trial table (``Sweep.trials``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from analysis.delta import direction, metric_columns, resolve_split
from analysis.errors import AnalysisError

DEFAULT_GROUPS = ("adapter", "weighting", "ranks")
ARROWS = {True: "↑", False: "↓", None: ""}
DELTA_HEADERS = {"delta_b_task": "Δb task (%) ↑", "delta_b_metric": "Δb metric (%) ↑"}
PARAMS_HEADER = "trainable params"


def primary_objective(trials: pd.DataFrame, split: str | None = None) -> tuple[str, bool]:
    """(column, higher_is_better) that ranks trials: Δb (task-averaged) when present, otherwise the
    first per-task metric of the split (contract order: semantic mIoU first)."""
    if "delta_b_task" in trials.columns and trials["delta_b_task"].notna().any():
        return "delta_b_task", True
    split = resolve_split(trials, split)
    for task, metrics in metric_columns(trials, split).items():
        for metric, column in metrics.items():
            d = direction(task, metric)
            if d is not None and trials[column].notna().any():
                return column, d
    raise AnalysisError(f"no trial has a {split} metric to rank by; expected e.g. test/semantic/miou")


def _ranked(trials: pd.DataFrame, value: str, higher: bool, exclude_failed: bool) -> pd.DataFrame:
    if value not in trials.columns:
        raise AnalysisError(f"no column '{value}' in the trials table")
    rows = trials[trials[value].notna()]
    if exclude_failed and "status" in rows.columns:
        rows = rows[rows["status"] != "FAILED"]
    return rows.sort_values(value, ascending=not higher, kind="stable")


def best_per_group(
    trials: pd.DataFrame,
    by: Sequence[str] = DEFAULT_GROUPS,
    value: str | None = None,
    higher_is_better: bool | None = None,
    exclude_failed: bool = True,
) -> pd.DataFrame:
    """The best trial of every group (rows of ``trials``), best group first. ``value`` defaults to
    ``primary_objective``; FAILED trials are skipped unless ``exclude_failed=False``."""
    if value is None:
        value, default_higher = primary_objective(trials)
        higher_is_better = default_higher if higher_is_better is None else higher_is_better
    higher = True if higher_is_better is None else higher_is_better
    missing = [c for c in by if c not in trials.columns]
    if missing:
        raise AnalysisError(f"cannot group by {missing}: not columns of the trials table")
    ranked = _ranked(trials, value, higher, exclude_failed)
    if not by:
        return ranked.head(1)
    return ranked.groupby(list(by), dropna=False, sort=False).head(1)


def _header(task: str, metric: str, baseline: Mapping[str, Any] | None) -> str:
    arrow = ARROWS[direction(task, metric, baseline)]
    return f"{task} {metric} {arrow}".rstrip()


def results_table(
    trials: pd.DataFrame,
    by: Sequence[str] = DEFAULT_GROUPS,
    split: str | None = None,
    baseline: Mapping[str, Any] | None = None,
    value: str | None = None,
) -> pd.DataFrame:
    """Best trial per group: group columns, ``trial``, per-task metrics (headers ``"<task> <metric> ↑/↓"``),
    Δb (when computed), trainable params. With ``baseline`` a "single-task baseline" row leads."""
    split = resolve_split(trials, split)
    best = best_per_group(trials, by, value)
    columns = metric_columns(trials, split)
    table = pd.DataFrame(index=best.index)
    for col in by:
        table[col] = best[col]
    table["trial"] = best["trial_id"]
    for task, metrics in columns.items():
        for metric, column in metrics.items():
            table[_header(task, metric, baseline)] = best[column]
    for column, header in DELTA_HEADERS.items():
        if column in best.columns:
            table[header] = best[column]
    params = best["trainable_params"] if "trainable_params" in best.columns else pd.NA
    table[PARAMS_HEADER] = pd.Series(params, index=best.index, dtype="Int64")
    table = table.reset_index(drop=True)
    base = (baseline or {}).get(split)
    if not base:
        return table
    row: dict[str, Any] = {col: "single-task baseline" if i == 0 else "" for i, col in enumerate(by)}
    row["trial"] = "" if by else "single-task baseline"
    for task, metrics in columns.items():
        for metric in metrics:
            row[_header(task, metric, baseline)] = base.get(task, {}).get(metric, math.nan)
    row.update({h: 0.0 for h in DELTA_HEADERS.values() if h in table.columns})
    first = pd.DataFrame([row], columns=table.columns).astype({PARAMS_HEADER: "Int64"})
    return pd.concat([first, table], ignore_index=True)


def _setting_stats(trials: pd.DataFrame, key: str, value: str, higher: bool) -> pd.DataFrame:
    rows = trials[trials[key].notna() & trials[value].notna()]
    if rows.empty:
        return pd.DataFrame(columns=[key, "trials", "best", "mean", "std", "best_trial"])
    grouped = rows.groupby(key, sort=True)[value]
    out = grouped.agg(trials="count", best="max" if higher else "min", mean="mean", std="std")
    best_rows = grouped.idxmax() if higher else grouped.idxmin()
    out["best_trial"] = rows.loc[best_rows, "trial_id"].to_numpy()
    return out.reset_index()


def _not_failed(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[trials["status"] != "FAILED"] if "status" in trials.columns else trials


def rank_sensitivity(
    trials: pd.DataFrame, value: str = "delta_b_task", higher_is_better: bool = True
) -> pd.DataFrame:
    """Long table: for each ToRA rank (R1, R2, R3) and setting, #trials and best/mean/std of ``value``
    over non-failed trials."""
    kept = _not_failed(trials)
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
    trials: pd.DataFrame, value: str = "delta_b_task", higher_is_better: bool = True
) -> pd.DataFrame:
    """Per weighting method over non-failed trials: #trials, #finished, best/mean/std of ``value``,
    the best trial; best method first."""
    if "weighting" not in trials.columns:
        raise AnalysisError("no 'weighting' column (tag mtsam.weighting / param weighting.method)")
    stats = _setting_stats(_not_failed(trials), "weighting", value, higher_is_better)
    finished = trials[trials["status"] == "FINISHED"].groupby("weighting").size()
    stats.insert(2, "finished", stats["weighting"].map(finished).fillna(0).astype("int64"))
    return stats.sort_values("best", ascending=not higher_is_better, kind="stable").reset_index(drop=True)
