"""Seeded sweeps (``search.seeds`` > 1): the configurations behind the trials, as mean ± std.

Each trial of a seeded sweep is one seed of a configuration (trial columns ``config``, ``seed``).
A configuration counts as full-budget only when every seed ran its full budget (one stopped seed
prunes it, as in the Optuna study); it is ranked by the mean of its seeds' validation objective.
``spread_notes`` says whether the best configuration differs from 0 (Δb) and from the runner-up by
more than the seed spread: Welch's t-test over the seeds' values, two-sided, at 5 %.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from analysis.errors import AnalysisError
from analysis.labels import header, is_delta_b
from mtsam.sweep.seeds import mean_std, welch

_WORST = {"finished": 0, "stopped_early": 1, "interrupted": 2, "failed": 3}


def is_seeded(trials: pd.DataFrame) -> bool:
    return "config" in trials.columns and trials.groupby("config").size().max() > 1


_SAME = (
    "config",
    "seed",
    "R1",
    "R2",
    "R3",
    "epochs_planned",
    "trainable_params",
    "total_params",
    "adapter_params",
)


def config_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials table with one row per configuration, for every per-group table and figure: each
    numeric metric column is the seeds' mean with its sample std beside it as ``<column> std``
    (figures draw it as error bars); ``trial_id`` is ``config#n``, ``seeds`` = n, the outcome the
    worst seed's (full budget only when every seed ran it), ``epochs`` the fewest, ``best_epoch``
    empty (each seed selects its own epoch); everything else is the configuration's first seed's."""
    rows = []
    for number, seeds in trials.groupby("config", sort=True):
        seeds = seeds.sort_values("seed")
        row = seeds.iloc[0].to_dict()
        for column in seeds.columns:
            values = seeds[column]
            numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
            if numeric and column not in _SAME and column not in ("epochs", "best_epoch", "stopped_at_epoch"):
                mean, std, n = mean_std(values.dropna().tolist())
                row[column] = mean if n == len(seeds) else float("nan")
                row[f"{column} std"] = std if n == len(seeds) and std is not None else float("nan")
        worst = max(seeds["outcome"].astype(str), key=lambda o: _WORST.get(o, 4))
        stopped = (
            seeds.loc[seeds["outcome"] == "stopped_early", "stopped_at_epoch"]
            if "stopped_at_epoch" in seeds
            else []
        )
        row.update(
            trial_id=f"config#{int(number)}",
            run_name=f"config#{int(number)}",
            outcome=worst,
            status="FAILED" if worst == "failed" else "FINISHED",
            epochs=int(seeds["epochs"].min()),
            best_epoch=pd.NA,
            stopped_at_epoch=int(min(stopped)) if len(stopped) else pd.NA,
            seeds=len(seeds),
        )
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column in ("epochs", "best_epoch", "stopped_at_epoch", "R1", "R2", "R3", "config"):
        if column in frame.columns:
            frame[column] = frame[column].astype("Int64")
    return frame


def config_table(trials: pd.DataFrame, value: str, higher: bool, searched: list[str]) -> pd.DataFrame:
    """One row per configuration: its searched values, seeds (n), outcome (the worst seed's), the
    mean and std of ``value`` (validation) and of every test metric; full-budget first, best mean first."""
    rows = []
    # Δb as analysis computes it (test_delta_b_*), then the raw test metrics of each selected epoch
    tests = [c for c in trials.columns if c.startswith("test_delta_b")]
    tests += [c for c in trials.columns if c.startswith("test/") and "delta_b" not in c]
    for number, seeds in trials.groupby("config", sort=True):
        first = seeds.sort_values("seed").iloc[0]
        outcome = max(seeds["outcome"].astype(str), key=lambda o: _WORST.get(o, 4))
        row = {"config": int(number), "seeds": len(seeds), "outcome": outcome}
        row.update({p: first[p] for p in searched if p in seeds.columns})
        for column in [value, *tests]:
            if column not in seeds.columns:
                continue
            mean, std, n = mean_std(seeds[column].tolist())
            if n == len(seeds):  # a seed without the value leaves the configuration without one
                row[f"{column} mean"], row[f"{column} std"] = mean, std
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty or f"{value} mean" not in table.columns:
        return table
    order = table["outcome"].ne("finished").astype(int)
    table = table.assign(_o=order).sort_values(["_o", f"{value} mean"], ascending=[True, not higher])
    return table.drop(columns="_o").reset_index(drop=True)


def readable(table: pd.DataFrame, value: str) -> pd.DataFrame:
    """``config_table`` with display headers: "<metric header> mean" and "± std" after each."""
    names = {}
    for column in table.columns:
        if column.endswith(" mean"):
            names[column] = f"{header(column.removesuffix(' mean'))} mean"
        elif column.endswith(" std"):
            names[column] = f"{header(column.removesuffix(' std'))} ± std"
    return table.rename(columns=names)


def spread_notes(trials: pd.DataFrame, table: pd.DataFrame, value: str) -> list[str]:
    """Does the best full-budget configuration differ from 0 and from the runner-up?"""
    done = table[table["outcome"] == "finished"] if "outcome" in table.columns else table.iloc[0:0]
    done = done[done[f"{value} mean"].notna()] if f"{value} mean" in done.columns else done.iloc[0:0]
    if done.empty:
        return ["seeds: no configuration ran its full budget with every seed; nothing to compare"]

    def values(config: int) -> list[float]:
        return trials.loc[trials["config"] == config, value].astype(float).tolist()

    def verdict(p: float | None) -> str:
        if p is None:
            return "not testable (fewer than 2 seeds or no spread)"
        return f"p = {p:.3g}, {'differs' if p < 0.05 else 'does not differ'} at 5 %"

    best = done.iloc[0]
    n = int(best["seeds"])
    what = f"best configuration #{int(best['config'])}: {header(value)} {best[f'{value} mean']:.4g}"
    what += f" ± {best[f'{value} std']:.2g} (mean ± std over {n} seeds)"
    parts = [what]
    if is_delta_b(value):
        parts.append(f"vs 0 (the baseline): {verdict(welch(values(best['config'])))}")
    if len(done) > 1:
        runner = done.iloc[1]
        p = welch(values(best["config"]), values(runner["config"]))
        shown = f"#{int(runner['config'])} ({runner[f'{value} mean']:.4g})"
        parts.append(f"vs the runner-up {shown}: {verdict(p)}")
    return ["; ".join(parts) + " — Welch's t-test over the seeds' validation values, two-sided"]


def plot_configurations(table: pd.DataFrame, value: str) -> Figure:
    """Mean ± std (error bars) of ``value`` per configuration; hollow = not every seed ran its full
    budget (not a final value); Δb axes carry the zero line of the baseline."""
    mean, std = f"{value} mean", f"{value} std"
    if table.empty or mean not in table.columns or table[mean].isna().all():
        raise AnalysisError("no configuration with a value to plot")
    rows = table[table[mean].notna()].reset_index(drop=True)
    fig = Figure(figsize=(max(4.5, 0.7 * len(rows) + 2), 3.8), layout="constrained")
    ax = fig.subplots()
    labelled = set()
    for i, row in rows.iterrows():
        full = row["outcome"] == "finished"
        text = "all seeds ran the full budget" if full else "a seed stopped early (not final)"
        ax.errorbar(
            i,
            row[mean],
            yerr=0 if pd.isna(row.get(std)) else row[std],
            fmt="o",
            color="C0",
            mfc="C0" if full else "white",
            capsize=4,
            label=None if text in labelled else text,
        )
        labelled.add(text)
    if is_delta_b(value):
        ax.axhline(0, color="0.25", lw=0.9, ls="--", zorder=1, label="baseline (Δb = 0)")
    ax.set_xticks(range(len(rows)), [f"#{int(c)}" for c in rows["config"]])
    ax.set_xlabel("configuration (Optuna trial number), best first")
    ax.set_ylabel(f"{header(value)}, mean ± std")
    n = int(rows["seeds"].max())
    ax.set_title(f"Configurations over {n} seeds: {header(value)} (validation)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return fig
