"""Figures of a sweep. Built on ``matplotlib.figure.Figure`` (no pyplot state), so they render with
any backend — Agg headless, inline in a notebook — and never leak open figures.

Conventions (``analysis.outcome``): full-budget trials are filled markers and alone set the axis
ranges and the "best" lines; early-stopped trials are hollow markers labelled "stopped@E" (a value
of a shorter run, shown for context only). Δb axes carry a zero line (= the single-task baseline).
A seeded sweep's configurations (``analysis.seeds.config_frame``: a ``<value> std`` column) get
error bars of ± std over their seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, MaxNLocator

from analysis.delta import metric_columns
from analysis.errors import AnalysisError
from analysis.labels import header, is_delta_b
from analysis.outcome import full_budget, stopped_early
from analysis.pareto import pareto_front

LABELS = {"val/delta_b_task": "val Δb task-avg (%) ↑"}  # kept for older callers


def label(column: str) -> str:
    return LABELS.get(column) or header(column)


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", format="png")
    return path


def _colors(keys: Sequence[object]) -> dict[object, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {k: cmap(i % 10) for i, k in enumerate(keys)}


def _value_axis(ax: Axes, column: str, values: pd.Series) -> tuple[float, float] | None:
    """y range from the full-budget values only (plus the zero line of a Δb axis)."""
    vals = pd.to_numeric(values, errors="coerce").dropna().astype(float)
    if is_delta_b(column):
        ax.axhline(0, color="0.25", lw=0.9, ls="--", zorder=1)
        vals = pd.concat([vals, pd.Series([0.0])])
    if vals.empty:
        return None
    lo, hi = float(vals.min()), float(vals.max())
    pad = (hi - lo) * 0.1 or max(abs(hi) * 0.1, 1e-3)
    ax.set_ylim(lo - pad, hi + pad)
    return lo - pad, hi + pad


def _stopped_label(row: pd.Series) -> str:
    at = row.get("stopped_at_epoch")
    return f"stopped@{int(at)}" if at is not None and pd.notna(at) else "stopped"


def _scatter_trials(
    ax: Axes, trials: pd.DataFrame, x: str, y: str, color="C0", label_full="full budget", range_of=None
):
    """Full-budget trials filled; they alone set the y range. Stopped trials hollow, labelled
    "stopped@E"; one outside that range is drawn as a hollow triangle at the edge with its value."""
    full = full_budget(trials)
    full = full[full[x].notna() & full[y].notna()]
    stop = stopped_early(trials)
    stop = stop[stop[x].notna() & stop[y].notna()]
    ax.scatter(full[x].astype(float), full[y].astype(float), color=color, s=30, zorder=3, label=label_full)
    span = full[y]
    if f"{y} std" in full.columns:  # a seeded sweep's configurations: ± std over their seeds
        err = full[f"{y} std"].astype(float).fillna(0.0)
        ax.errorbar(
            full[x].astype(float), full[y].astype(float), yerr=err, fmt="none", ecolor=color, capsize=3
        )
        span = pd.concat([full[y].astype(float) - err, full[y].astype(float) + err])
    limits = _value_axis(ax, y, span if range_of is None else range_of)
    for i, (_, row) in enumerate(stop.iterrows()):
        value, xv = float(row[y]), float(row[x])
        text, marker, shown = _stopped_label(row), "o", value
        if limits is not None and not limits[0] <= value <= limits[1]:
            above = value > limits[1]
            shown = limits[1] if above else limits[0]
            marker, text = ("^" if above else "v"), f"{text}: {value:.3g} (off scale)"
        ax.scatter(
            [xv],
            [shown],
            marker=marker,
            facecolors="none",
            edgecolors=color,
            s=36,
            zorder=3,
            clip_on=False,
            label="stopped early (hollow)" if i == 0 else None,
        )
        offset = (4, -10) if marker != "^" else (4, -12)
        ax.annotate(text, (xv, shown), textcoords="offset points", xytext=offset, fontsize=7, color="0.35")
    return full, stop


def default_curve_metrics(history: pd.DataFrame) -> list[str]:
    """Training loss and the validation objective (Δb if logged, else the first val metric)."""
    metrics = [m for m in ("train/loss/total", "val/delta_b_task") if m in history.columns]
    if "val/delta_b_task" not in metrics:  # the first validation metric in the contract order
        columns = metric_columns(history.rename(columns=lambda c: f"best/{c}"), "val")
        firsts = [f"val/{t}/{next(iter(ms))}" for t, ms in columns.items() if ms]
        metrics += firsts[:1]
    return metrics


def plot_learning_curves(
    history: pd.DataFrame,
    trials: pd.DataFrame | None = None,
    metrics: Sequence[str] | None = None,
    hue: str = "weighting",
) -> Figure:
    """One panel per metric, one line per trial over epochs, coloured by ``hue``; early-stopped
    trials dashed with a hollow last point."""
    metrics = list(metrics) if metrics else default_curve_metrics(history)
    if history.empty or not metrics:
        raise AnalysisError("no per-epoch history to plot; expected metrics logged at step = epoch")
    groups = pd.Series("all", index=history.index)
    by_run = trials.set_index("run_id") if trials is not None else None
    if by_run is not None and hue in by_run.columns:
        groups = history["run_id"].map(by_run[hue].astype(str)).fillna("?")
    stopped = set()
    if by_run is not None and "outcome" in by_run.columns:
        stopped = set(by_run.index[by_run["outcome"] == "stopped_early"])
    colors = _colors(list(dict.fromkeys(groups)))
    fig = Figure(figsize=(5.2 * len(metrics), 3.8), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        if metric not in history.columns:
            raise AnalysisError(f"metric '{metric}' is not in the history")
        seen = set()
        for run_id, rows in history.groupby("run_id", sort=False):
            rows = rows[rows[metric].notna()]
            if not len(rows):
                continue
            group = groups.loc[rows.index[0]]
            dashed = run_id in stopped
            ax.plot(
                rows["epoch"],
                rows[metric],
                marker="o",
                ms=3,
                ls="--" if dashed else "-",
                color=colors[group],
                label=None if group in seen else group,
            )
            if dashed:
                last = rows.iloc[-1]
                ax.scatter(
                    [last["epoch"]], [last[metric]], s=40, facecolors="white", edgecolors=colors[group]
                )
            seen.add(group)
        # the y range is the full-budget runs' (stopped runs may leave it; an arrow marks where)
        kept = history[~history["run_id"].isin(stopped)][metric]
        limits = _value_axis(ax, metric, kept) if kept.notna().any() else None
        if limits is None and is_delta_b(metric):
            ax.axhline(0, color="0.25", lw=0.9, ls="--")
        for _, rows in history[history["run_id"].isin(stopped)].groupby("run_id", sort=False):
            rows = rows[rows[metric].notna()]
            if limits is None or not len(rows):
                continue
            off = rows[(rows[metric] > limits[1]) | (rows[metric] < limits[0])]
            for _, row in off.iterrows():
                above = row[metric] > limits[1]
                ax.scatter(
                    [row["epoch"]],
                    [limits[1] if above else limits[0]],
                    marker="^" if above else "v",
                    s=36,
                    facecolors="none",
                    edgecolors="0.35",
                    clip_on=False,
                    zorder=4,
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel(label(metric))
        ax.set_title(label(metric), fontsize=10)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    if trials is not None and hue in trials.columns:
        axes[-1].legend(title=f"{hue} (dashed: stopped early; ▲▼ off scale)", fontsize=8, title_fontsize=8)
    fig.suptitle("Learning curves per trial (validation metrics of each epoch)", fontsize=11)
    return fig


def pareto_x(trials: pd.DataFrame) -> tuple[str | None, str]:
    """The parameter count that differs between trials, for the Pareto x axis, and a note.

    Adapter parameters when they vary (decoders and norms are the same for every trial), else
    trainable parameters when they vary; None when every trial trains as many parameters."""
    full = full_budget(trials)
    for column in ("adapter_params", "trainable_params"):  # counts follow the config, not the outcome
        if column in trials.columns and trials[column].dropna().nunique() > 1:
            return column, ""
    if "trainable_params" in full.columns and full["trainable_params"].notna().any():
        n = int(full["trainable_params"].dropna().iloc[0])
        adapter = full["adapter_params"].dropna() if "adapter_params" in full.columns else pd.Series([])
        share = f"; adapter: {int(adapter.iloc[0]):,}" if len(adapter) else ""
        return None, (
            f"every full-budget trial trains {n:,} parameters{share}: the count does not separate "
            "trials (decoders dominate), so there is no Pareto trade-off to show"
        )
    return None, "no trial logged model/trainable_params"


def plot_pareto(
    trials: pd.DataFrame,
    x: str = "trainable_params",
    y: str = "delta_b_task",
    maximize_y: bool = True,
    annotate: bool = True,
) -> Figure:
    """Full-budget trials (filled) and their front of best ``y`` / min ``x`` (red, a step line);
    early-stopped trials hollow, not on the front."""
    full = full_budget(trials)
    points = full[full[x].notna() & full[y].notna()]
    if points.empty:
        raise AnalysisError(f"no full-budget trial has both '{x}' and '{y}'")
    front = pareto_front(points, {y: "max" if maximize_y else "min", x: "min"})
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    _scatter_trials(ax, trials, x, y, color="0.55", label_full="full-budget trials")
    ax.step(front[x].astype(float), front[y].astype(float), where="post", color="C3", lw=1.2)
    ax.scatter(
        front[x].astype(float), front[y].astype(float), color="C3", s=50, zorder=4, label="Pareto front"
    )
    if annotate:
        for _, row in front.iterrows():
            ax.annotate(
                str(row["trial_id"]),
                (float(row[x]), float(row[y])),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
    xs = points[x].astype(float)
    if xs.min() > 0 and xs.max() / xs.min() > 10:
        ax.set_xscale("log")
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 1.2M, 350k: readable parameter counts
    ax.tick_params(axis="x", labelrotation=0)
    ax.set_xlabel(label(x))
    ax.set_ylabel(label(y))
    ax.set_title(f"Pareto front: {label(y)} vs {label(x)}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_rank_sensitivity(
    trials: pd.DataFrame, value: str = "val_delta_b_task", higher_is_better: bool = True
) -> Figure:
    """``value`` against each ToRA rank R1/R2/R3: each trial a dot (hollow: stopped early), the best
    full-budget trial per setting as a line."""
    ranks = [r for r in ("R1", "R2", "R3") if r in trials.columns and trials[r].notna().any()]
    rows = trials[trials[value].notna() & (trials["status"] != "FAILED")] if ranks else trials.iloc[:0]
    if full_budget(rows).empty:
        raise AnalysisError("no full-budget ToRA trial (params adapter.r1-r3) with a value to plot")
    fig = Figure(figsize=(4.2 * len(ranks), 3.6), layout="constrained")
    axes = fig.subplots(1, len(ranks), sharey=True, squeeze=False)[0]
    for ax, rank in zip(axes, ranks):
        sub = rows[rows[rank].notna()]
        full, _ = _scatter_trials(ax, sub, rank, value, color="0.5", label_full="trials")
        best = full.groupby(rank)[value].max() if higher_is_better else full.groupby(rank)[value].min()
        ax.plot(best.index.astype(float), best.to_numpy(), color="C0", marker="o", label="best (full budget)")
        settings = sorted({int(v) for v in sub[rank].dropna()})
        ax.set_xscale("log", base=2)
        ax.set_xticks([float(v) for v in settings], [str(v) for v in settings])
        ax.minorticks_off()
        ax.set_xlabel(f"ToRA rank {rank} (adapter.r{rank[1]})")
        ax.set_title(f"{rank}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(label(value))
    axes[-1].legend(fontsize=7)
    fig.suptitle(f"ToRA rank sensitivity: {label(value)}", fontsize=11)
    return fig


def plot_weighting(
    trials: pd.DataFrame, value: str = "val_delta_b_task", higher_is_better: bool = True
) -> Figure:
    """``value`` per weighting method: each full-budget trial a dot, early-stopped ones hollow,
    the best full-budget trial as a bar."""
    rows = trials[trials[value].notna() & (trials["status"] != "FAILED")]
    if rows.empty or "weighting" not in rows.columns:
        raise AnalysisError("no trial with a weighting method and a value to compare")
    methods = list(dict.fromkeys(rows["weighting"].astype(str)))
    full = full_budget(rows)
    stats = full.groupby("weighting")[value]
    best = stats.max() if higher_is_better else stats.min()
    methods.sort(key=lambda m: -best.get(m, -math.inf) if higher_is_better else best.get(m, math.inf))
    fig = Figure(figsize=(max(4.5, 1.2 * len(methods) + 2), 3.8), layout="constrained")
    ax = fig.subplots()
    positions = np.arange(len(methods))
    ax.bar(
        positions, [best.get(m, np.nan) for m in methods], color="C0", alpha=0.35, label="best (full budget)"
    )
    for pos, method in zip(positions, methods):
        sub = rows[rows["weighting"].astype(str) == method].assign(_x=float(pos))
        _scatter_trials(
            ax,
            sub,
            "_x",
            value,
            color="C0",
            label_full="full-budget trial" if pos == 0 else None,
            range_of=full[value],  # one range for all methods: the full-budget values
        )
    ax.set_xticks(positions, methods)
    ax.set_xlabel("weighting method (weighting.method)")
    ax.set_ylabel(label(value))
    ax.set_title(f"Weighting methods: {label(value)}", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    handles, labels_ = ax.get_legend_handles_labels()
    unique = dict(zip(labels_, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8)
    return fig


def plot_hyperparameters(
    trials: pd.DataFrame, params: Sequence[str], value: str, higher_is_better: bool = True
) -> Figure:
    """One panel per searched hyperparameter: the objective against its value (hollow: stopped)."""
    params = [p for p in params if p in trials.columns and trials[p].notna().any()]
    if not params:
        raise AnalysisError("no searched hyperparameter to plot")
    cols = min(3, len(params))
    nrows = math.ceil(len(params) / cols)
    fig = Figure(figsize=(4.3 * cols, 3.3 * nrows), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    rows = trials[trials[value].notna()]
    for ax, param in zip(axes, params):
        sub = rows[rows[param].notna()]
        numeric = pd.api.types.is_numeric_dtype(sub[param]) and not pd.api.types.is_bool_dtype(sub[param])
        if numeric:
            data = sub.assign(_x=sub[param].astype(float))
            positive = data["_x"] > 0
            if positive.all() and len(data) and data["_x"].max() / data["_x"].min() > 20:
                ax.set_xscale("log")
            else:
                ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.tick_params(axis="x", labelsize=8)
        else:
            cats = sorted(sub[param].astype(str).unique())
            data = sub.assign(_x=sub[param].astype(str).map({c: i for i, c in enumerate(cats)}).astype(float))
            ax.set_xticks(range(len(cats)), cats, rotation=20 if len(cats) > 3 else 0)
        _scatter_trials(ax, data, "_x", value, color="C0")
        ax.set_xlabel(param)
        ax.set_title(param, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[len(params) :]:
        ax.set_visible(False)
    for ax in axes[::cols]:
        ax.set_ylabel(label(value), fontsize=8)
    fig.suptitle(f"Searched hyperparameters vs the objective ({label(value)})", fontsize=11)
    return fig


def plot_importance(importances: pd.DataFrame, title: str) -> Figure:
    """Horizontal bars of ``importances`` (columns ``param``, ``importance``), largest on top."""
    data = importances.sort_values("importance")
    fig = Figure(figsize=(6, 0.45 * len(data) + 1.4), layout="constrained")
    ax = fig.subplots()
    ax.barh(data["param"], data["importance"], color="C2")
    ax.set_xlabel("importance (share of the objective's variance, sums to 1)")
    ax.set_xlim(0, max(1e-9, float(data["importance"].max())) * 1.15)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    return fig
