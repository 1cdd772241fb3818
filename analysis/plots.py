"""Figures of a sweep. Built on ``matplotlib.figure.Figure`` (no pyplot state), so they render with
any backend — Agg headless, inline in a notebook — and never leak open figures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.errors import AnalysisError
from analysis.pareto import pareto_front

LABELS = {
    "delta_b_task": "Δb task-averaged (%) ↑",
    "delta_b_metric": "Δb metric-averaged (%) ↑",
    "trainable_params": "trainable parameters ↓",
    "val/delta_b_task": "val Δb task-averaged (%) ↑",
    "train/loss/total": "train loss (total) ↓",
}


def label(column: str) -> str:
    return LABELS.get(column, column)


def save_figure(fig: Figure, path: str | Path, dpi: int = 150) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", format="png")
    return path


def _colors(keys: Sequence[object]) -> dict[object, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {k: cmap(i % 10) for i, k in enumerate(keys)}


def default_curve_metrics(history: pd.DataFrame) -> list[str]:
    """Training loss and the validation objective (Δb if logged, else the first val metric)."""
    metrics = [m for m in ("train/loss/total", "val/delta_b_task") if m in history.columns]
    if "val/delta_b_task" not in metrics:
        metrics += [c for c in history.columns if c.startswith("val/") and c.count("/") == 2][:1]
    return metrics


def plot_learning_curves(
    history: pd.DataFrame,
    trials: pd.DataFrame | None = None,
    metrics: Sequence[str] | None = None,
    hue: str = "weighting",
) -> Figure:
    """One panel per metric, one line per trial over epochs, coloured by ``hue`` (a trials column)."""
    metrics = list(metrics) if metrics else default_curve_metrics(history)
    if history.empty or not metrics:
        raise AnalysisError("no per-epoch history to plot; expected metrics logged at step = epoch")
    groups = pd.Series("all", index=history.index)
    if trials is not None and hue in trials.columns:
        groups = history["run_id"].map(trials.set_index("run_id")[hue].astype(str)).fillna("?")
    colors = _colors(list(dict.fromkeys(groups)))
    fig = Figure(figsize=(5 * len(metrics), 3.6), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        if metric not in history.columns:
            raise AnalysisError(f"metric '{metric}' is not in the history")
        seen = set()
        for _, rows in history.groupby("run_id", sort=False):
            rows = rows[rows[metric].notna()]
            group = groups.loc[rows.index[0]] if len(rows) else None
            if group is None:
                continue
            ax.plot(
                rows["epoch"],
                rows[metric],
                marker="o",
                ms=3,
                color=colors[group],
                label=None if group in seen else group,
            )
            seen.add(group)
        ax.set_xlabel("epoch")
        ax.set_title(label(metric), fontsize=10)
        ax.grid(alpha=0.3)
    if trials is not None and hue in trials.columns:
        axes[-1].legend(title=hue, fontsize=8)
    return fig


def plot_pareto(
    trials: pd.DataFrame,
    x: str = "trainable_params",
    y: str = "delta_b_task",
    maximize_y: bool = True,
    annotate: bool = True,
) -> Figure:
    """All trials (grey) and the front of best ``y`` / min ``x`` (highlighted, joined by a step line)."""
    points = trials[trials[x].notna() & trials[y].notna()]
    if points.empty:
        raise AnalysisError(f"no trial has both '{x}' and '{y}'")
    front = pareto_front(points, {y: "max" if maximize_y else "min", x: "min"})
    fig = Figure(figsize=(6, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.scatter(points[x], points[y], color="0.65", s=25, label="trials")
    ax.step(front[x], front[y], where="post", color="C3", lw=1.2)
    ax.scatter(front[x], front[y], color="C3", s=45, zorder=3, label="Pareto front")
    if annotate:
        for _, row in front.iterrows():
            ax.annotate(
                str(row["trial_id"]), (row[x], row[y]), textcoords="offset points", xytext=(4, 4), fontsize=8
            )
    xs = points[x].astype(float)
    if xs.min() > 0 and xs.max() / xs.min() > 10:
        ax.set_xscale("log")
    ax.set_xlabel(label(x))
    ax.set_ylabel(label(y))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_rank_sensitivity(
    trials: pd.DataFrame, value: str = "delta_b_task", higher_is_better: bool = True
) -> Figure:
    """``value`` against each ToRA rank R1/R2/R3: every trial as a dot, the best per setting as a line."""
    ranks = [r for r in ("R1", "R2", "R3") if r in trials.columns and trials[r].notna().any()]
    rows = trials[trials[value].notna() & (trials["status"] != "FAILED")] if ranks else trials.iloc[:0]
    if rows.empty:
        raise AnalysisError("no ToRA trial (param adapter.ranks) with a value to plot rank sensitivity")
    fig = Figure(figsize=(4 * len(ranks), 3.4), layout="constrained")
    axes = fig.subplots(1, len(ranks), sharey=True, squeeze=False)[0]
    for ax, rank in zip(axes, ranks):
        sub = rows[rows[rank].notna()]
        ax.scatter(sub[rank].astype(float), sub[value], color="0.5", s=20)
        best = sub.groupby(rank)[value].max() if higher_is_better else sub.groupby(rank)[value].min()
        ax.plot(best.index.astype(float), best.to_numpy(), color="C0", marker="o", label="best")
        ax.set_xscale("log", base=2)
        ax.set_xticks(best.index.astype(float), [str(int(v)) for v in best.index])
        ax.set_xlabel(rank)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(label(value))
    return fig


def plot_weighting(
    trials: pd.DataFrame, value: str = "delta_b_task", higher_is_better: bool = True
) -> Figure:
    """``value`` per weighting method: each trial as a dot, the best as a bar."""
    rows = trials[trials[value].notna() & (trials["status"] != "FAILED")]
    if rows.empty or "weighting" not in rows.columns:
        raise AnalysisError("no trial with a weighting method and a value to compare")
    stats = rows.groupby("weighting")[value]
    best = (stats.max() if higher_is_better else stats.min()).sort_values(ascending=not higher_is_better)
    fig = Figure(figsize=(max(4, 1.1 * len(best) + 2), 3.6), layout="constrained")
    ax = fig.subplots()
    positions = np.arange(len(best))
    ax.bar(positions, best.to_numpy(), color="C0", alpha=0.35, label="best")
    for pos, method in zip(positions, best.index):
        vals = rows.loc[rows["weighting"] == method, value]
        ax.scatter(np.full(len(vals), pos), vals, color="C0", s=18, zorder=3)
    ax.set_xticks(positions, [str(m) for m in best.index])
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_ylabel(label(value))
    ax.grid(alpha=0.3, axis="y")
    return fig
