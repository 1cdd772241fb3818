"""The end of a sweep: per-trial rows, top-trials table, Pareto set, best adapter, next commands."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import yaml

from .params import sampled_params
from .plan import PARAMS_METRIC, SweepPlan
from .sampler import apply_params, flatten
from .seeds import seed_of, spread_line
from .tracking import error_reason, run_name


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def trial_rows(grid, plan: SweepPlan, trial_base: dict, numbers: dict[str, int] | None = None) -> list[dict]:
    """One dict per trial: full-budget trials first, each group best first. ``score`` = the trial's
    best validation objective over its epochs — the epoch the trainer selected, whose test metrics
    are the trial's answer. ``numbers``: Ray trial id → Optuna trial number."""
    epochs = plan.base["train"]["epochs"]
    rows = []
    for result in grid:
        last = result.metrics or {}
        sampled = flatten(result.config or {})
        cfg = apply_params(trial_base, sampled)
        trial_id = last.get("trial_id") or Path(result.path).name.split("_")[-1]
        history = result.metrics_dataframe
        score = None
        if history is not None and plan.metric in history:
            values = [v for v in history[plan.metric].tolist() if _finite(v)]
            if values:
                score = max(values) if plan.mode == "max" else min(values)
        done = int(last.get("epoch", 0) or 0)
        status = "failed" if result.error else "finished" if done >= epochs else f"stopped@{done}"
        number, seed = seed_of(result.config)
        outcome = "stopped_early" if status.startswith("stopped") else status
        rows.append(
            {
                "trial_id": trial_id,
                "optuna_trial": (numbers or {}).get(trial_id),
                "name": run_name(cfg, trial_id[-5:]),
                "status": status,
                "outcome": outcome,
                "epochs": done,
                "score": score,
                "best_epoch": last.get("best/epoch"),
                "test": {k: v for k, v in last.items() if k.startswith("test/") and _finite(v)},
                "trainable_params": last.get(PARAMS_METRIC),
                "cost": last.get(plan.objectives[-1][0]) if plan.pareto else None,
                "node_id": last.get("node_id"),
                "sampled": sampled_params(sampled),
                "config": cfg,
                "checkpoint": result.checkpoint,
                "path": result.path,
                "error": error_reason(str(result.error)) if result.error else None,
                "config_number": number,  # search.seeds > 1: the configuration (Optuna trial) …
                "seed": seed,  # … and which of its seeds
            }
        )
    sign = -1 if plan.mode == "max" else 1
    group = {"finished": 0, "stopped_early": 1, "failed": 2}  # a one-epoch score is not a result
    rows.sort(
        key=lambda r: (
            group.get(r["outcome"], 3),
            r["score"] is None,
            sign * r["score"] if r["score"] is not None else 0,
        )
    )
    return rows


def pareto_front(rows: list[dict], plan: SweepPlan) -> list[dict]:
    """Non-dominated full-budget trials for (objective, cost ↓): the cost is ``search.cost``'s metric."""
    pts = [
        r for r in rows if r["outcome"] == "finished" and r["score"] is not None and r.get("cost") is not None
    ]
    better = (lambda a, b: a >= b) if plan.mode == "max" else (lambda a, b: a <= b)

    def dominates(a: dict, b: dict) -> bool:
        ge = better(a["score"], b["score"]) and a["cost"] <= b["cost"]
        return ge and (a["score"] != b["score"] or a["cost"] != b["cost"])

    return [r for r in pts if not any(dominates(o, r) for o in pts if o is not r)]


def save_best(rows: list[dict], plan: SweepPlan, client, parent_run_id: str) -> str | None:
    """The best trial's adapter (of its selected epoch) and config → ``<state>/best`` and the parent run."""
    from .parent import best_row

    best = best_row(rows)
    if best is None or best["checkpoint"] is None:
        return None
    out = plan.state_dir / "best"
    out.mkdir(parents=True, exist_ok=True)
    with best["checkpoint"].as_directory() as folder:
        src = Path(folder) / "best_adapter.pt"
        if not src.is_file():
            return None
        shutil.copy2(src, out / "adapter.pt")
    (out / "config.yaml").write_text(yaml.safe_dump(best["config"], sort_keys=False))
    client.log_artifact(parent_run_id, str(out / "adapter.pt"), artifact_path="best")
    client.log_artifact(parent_run_id, str(out / "config.yaml"), artifact_path="best")
    return str(out / "adapter.pt")


def _short(key: str) -> str:
    _, task, metric = key.split("/", 2)
    return f"{task[:3]}.{metric.replace('within_', '<')}"


def _fmt(value: Any, key: str = "", std: float | None = None) -> str:
    if value is None:
        return "-"
    if std is not None:  # search.seeds > 1: mean ± sample std over the seeds
        return f"{_fmt(value, key)} ± {_fmt(std, key).lstrip('+')}"
    if "delta_b" in key:
        return f"{value:+.2f}"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    return f"{value:.4g}"


def format_table(rows: list[dict], plan: SweepPlan, top_k: int, trivial: dict | None = None) -> str:
    """Top trials, then a "trivial" reference row (constant predictors) when ``trivial`` is given."""
    shown = rows[:top_k]
    metric_keys: list[str] = []
    for r in shown:
        metric_keys += [k for k in r["test"] if "delta_b" not in k and k not in metric_keys]
    objective = plan.metric.removeprefix("val/")
    seeded = plan.config.search.seeds > 1
    what = "configuration" if seeded else "trial"
    headers = ["#", what, "status", f"val {objective}", "test Δb%", *map(_short, metric_keys), "trainable"]
    table = [headers]
    for i, r in enumerate(shown, 1):
        std = r.get("test_std") or {}
        table.append(
            [
                str(i),
                r["name"],
                r["status"],
                _fmt(r["score"], plan.metric, r.get("score_std")),
                _fmt(r["test"].get("test/delta_b_task"), "delta_b", std.get("test/delta_b_task")),
                *(_fmt(r["test"].get(k), std=std.get(k)) for k in metric_keys),
                _fmt(r["trainable_params"]),
            ]
        )
    if trivial:
        flat = {f"test/{t}/{m}": v for t, ms in trivial.get("test", {}).items() for m, v in ms.items()}
        table.append(["-", "trivial (constant predictors)", "reference", "-", "-"])
        table[-1] += [_fmt(flat.get(k)) for k in metric_keys] + ["0"]
    widths = [max(len(row[c]) for row in table) for c in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(w) if c < 3 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths)))
        for row in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary_text(result, plan: SweepPlan) -> str:
    rows, seeds = result.rows, plan.config.search.seeds
    what = f"configurations, mean ± std over {seeds} seeds" if seeds > 1 else "trials"
    out = [
        f"\nTop {min(plan.config.top_k, len(rows))} of {len(rows)} {what} "
        f"(test metrics of each trial's selected epoch):",
        format_table(rows, plan, plan.config.top_k, getattr(result, "trivial", None)),
    ]
    spread = spread_line(rows, plan.metric, seeds) if seeds > 1 else None
    if spread:
        out.append(spread)
    from .parent import best_row

    best = best_row(rows)
    if best is not None:
        values = ", ".join(
            f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in best["sampled"].items()
        )
        what = "configuration (by mean validation)" if seeds > 1 else "trial (by validation)"
        out.append(f"\nbest full-budget {what}: {best['name']} ({values})")
    if plan.pareto:
        cost = plan.config.search.cost
        unit = {"trainable_params": "params", "train_flops": "GFLOP/image", "peak_memory": "GiB (est.)"}[cost]
        out.append(
            f"\nPareto set ({plan.metric} ↑, {cost.replace('_', ' ')} ↓): "
            f"{len(result.pareto)} trial{'s' if len(result.pareto) != 1 else ''}"
        )
        for r in sorted(result.pareto, key=lambda r: r["cost"]):
            score, value = _fmt(r["score"], plan.metric), _fmt(r["cost"])
            out.append(f"  {r['name']:<40} {score:>8}  {value:>12} {unit}")
    out.append("")
    out.append(f"best adapter:  {result.best_adapter or '-'}")
    uri = result.tracking_uri
    if uri.startswith(("http://", "https://")):
        out.append(f"MLflow UI:     open {uri} (experiment '{result.name}')")
    else:
        # one worker: MLflow's default 4 took ~90 s to answer on a 2-CPU machine
        out.append(
            f"MLflow UI:     mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000 --workers 1"
        )
    report_dir = plan.state_dir / "report"
    out.append(
        f"analysis:      python -m analysis.report --tracking-uri {uri} --experiment {result.name} "
        f"--out {report_dir}"
    )
    out.append(f"Optuna study:  optuna-dashboard {result.study_location}")
    return "\n".join(out)


def log_top_adapters(rows: list[dict], plan: SweepPlan, client) -> int:
    """``log_adapters: top_k``: the adapter of each of the top_k full-budget trials' selected epoch
    → its own MLflow run (``adapter/best_adapter.pt``); returns how many were logged."""
    from .artifacts import log_adapter
    from .tracking import PARENT, TRIAL_ID

    top = [r for r in rows if r["outcome"] == "finished" and r["score"] is not None][: plan.config.top_k]
    logged = 0
    for row in top:
        runs = client.search_runs(
            [client.get_experiment_by_name(plan.name).experiment_id],
            f"tags.`{TRIAL_ID}` = '{row['trial_id']}'",
            max_results=5,
        )
        runs = [r for r in runs if r.data.tags.get(PARENT)]
        if runs and log_adapter(client, runs[0].info.run_id, row["checkpoint"]):
            logged += 1
    return logged
