"""The sweep's parent MLflow run: how it opens (tags, params, description) and what it says at the end.

A researcher reads the sweep from this run: its description (``mlflow.note.content``) says what
was searched, how Δb is defined and which baseline it used; its metrics are the result — the best
full-budget trial by the *validation* objective, that trial's test metrics, and how many trials
ended which way (docs/TRACKING.md).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from . import tracking as tr
from .params import param_name, sweep_params
from .plan import SweepPlan
from .sampler import space_params
from .state import SweepState
from .tuning import sampler_label, scheduler_label

OUTCOMES = ("finished", "stopped_early", "failed", "interrupted")
DELTA_B = (
    "Δb (%, task-averaged, LibMTL form) = 100 · 1/T Σ_t 1/M_t Σ_m σ_m (N_tm − B_tm) / B_tm, σ_m = +1 where "
    "higher is better (miou, pix_acc, within_*) and −1 where lower is (abs_err, rel_err, mean, median); "
    "N = the trial's metric, B = the single-task baseline's, same split; val/delta_b_metric averages "
    "over all metrics instead of per task."
)


def objectives_tag(plan: SweepPlan) -> str:
    return ",".join(f"{m}:{d}" for m, d in plan.objectives)


def searched_line(plan: SweepPlan) -> str:
    params = space_params(plan.config.space, plan.base)
    if not params:
        return "Searched: nothing (every trial runs the base config)."
    return "Searched: " + "; ".join(f"{param_name(p.name)} {p.dist.describe()}" for p in params) + "."


def note(plan: SweepPlan, baseline: str, result: str | None = None) -> str:
    s = plan.config.search
    how = " and ".join(f"{'maximising' if d == 'max' else 'minimising'} {m}" for m, d in plan.objectives)
    lines = [
        f"Sweep '{plan.name}': {plan.count_text()} of {plan.base['train']['epochs']} epochs, Optuna "
        f"{sampler_label(plan)} (seed {s.seed}) {how}, {scheduler_label(plan)} scheduler; "
        "trials are compared on the validation split, test metrics are of each trial's selected epoch.",
        searched_line(plan),
        DELTA_B if "delta_b" in plan.metric else f"Objective: {plan.metric} (no baseline, no Δb).",
        f"Baseline: {baseline}.",
    ]
    if result:
        lines.append(result)
    return "\n".join(lines)


def open_parent(plan: SweepPlan, client, state: SweepState | None, git_commit: str) -> SweepState:
    """The parent run of a new sweep (created, with its tags, params and config), or the one a
    ``--resume`` continues."""
    if state is not None:
        client.update_run(state.parent_run_id, status="RUNNING")
        tr.mark_model_training(client, state.experiment_id)
        return state
    experiment_id = tr.ensure_experiment(client, plan.name, plan.tracking_uri)
    tr.mark_model_training(client, experiment_id)
    base = plan.base
    tags = {
        tr.ROLE: "sweep",
        "mtsam.sweep": plan.name,
        "mtsam.git_commit": git_commit,
        "mtsam.config_file": plan.config_file or "<embedded quickstart>",
        "mtsam.dataset": base["data"]["dataset"],
        "mtsam.variant": base["model"]["variant"],
        "mtsam.search_mode": plan.config.search.mode,
        "mtsam.objective": plan.metric,
        "mtsam.objective_mode": plan.mode,
        "mtsam.objectives": objectives_tag(plan),
        "mtsam.scheduler": scheduler_label(plan),
        "mtsam.sampler": sampler_label(plan),
        "mtsam.state_dir": str(plan.state_dir),
        "mtsam.ray_experiment": plan.exp_path,
        "mtsam.study": plan.study_location,
        tr.NOTE: note(plan, "being resolved (see mtsam.baseline)"),
    }
    run = tr.create_run(client, experiment_id, tags, f"sweep-{plan.name}")
    state = SweepState(parent_run_id=run.info.run_id, experiment_id=experiment_id)
    state.save(plan.state_dir)  # first, so a kill from here on can be resumed into this run
    tr.log_params(client, run.info.run_id, sweep_params(plan.resolved_dict(), base))
    client.log_text(run.info.run_id, plan.resolved_yaml(), "config.yaml")
    return state


def baseline_text(plan: SweepPlan, key: str | None = None, run_ids: list[str] | None = None) -> str:
    if plan.baseline_mode == "none":
        return "none (no Δb)"
    if plan.baseline_mode == "inline":
        return "given in the config (base.baseline); values in baseline.json"
    seeds = plan.config.search.seeds
    each = f"the mean over {seeds} seeds of " if seeds > 1 else ""
    return (
        f"{each}single-task runs of the base config (key {key}; runs {', '.join(run_ids or [])}), "
        "each at its selected epoch; values in baseline.json"
    )


def log_baseline(client, plan: SweepPlan, run_id: str, text: str, key: str | None = None) -> None:
    tag = {"auto": f"auto {key}", "inline": "inline", "none": "none"}[plan.baseline_mode]
    tr.set_tags(client, run_id, {"mtsam.baseline": tag, tr.NOTE: note(plan, text)})


def best_row(rows: list[dict]) -> dict | None:
    """The best trial that ran its full budget, by the validation objective (rows come best first)."""
    return next((r for r in rows if r.get("outcome") == "finished" and r["score"] is not None), None)


def log_result(client, plan: SweepPlan, run_id: str, rows: list[dict], baseline: str) -> dict[str, float]:
    """Parent metrics (step 0) and the description's result line; returns the metrics."""
    counts = Counter(r.get("outcome") for r in rows)
    metrics: dict[str, float] = {f"sweep/trials/{o}": counts.get(o, 0) for o in OUTCOMES}
    best = best_row(rows)
    result = "Result: no trial ran its full budget."
    if best is not None:
        metrics[f"sweep/best/{plan.metric}"] = best["score"]
        metrics.update({f"sweep/best/{k}": v for k, v in best["test"].items()})
        test = best["test"].get("test/delta_b_task")
        shown = f", test Δb {test:+.2f} %" if test is not None else ""
        result = (
            f"Result: best full-budget trial {best['name']} (Optuna #{best.get('optuna_trial')}) "
            f"{plan.metric} {best['score']:.4g} at epoch {best.get('best_epoch')}{shown}."
        )
        if best.get("seeds"):  # search.seeds > 1: means over the seeds, with their std
            if best.get("score_std") is not None:
                metrics[f"sweep/best/{plan.metric}_std"] = best["score_std"]
            metrics.update({f"sweep/best/{k}_std": v for k, v in best["test_std"].items()})
            metrics["sweep/seeds"] = best["seeds"]
            result = (
                f"Result: best full-budget configuration {best['name']} "
                f"(Optuna #{best.get('optuna_trial')}), "
                f"mean over {best['seeds']} seeds: {plan.metric} {best['score']:.4g} "
                f"± {best.get('score_std') or 0:.2g}{shown} (test Δb is the seeds' mean too)."
            )
    counted = ", ".join(f"{counts.get(o, 0)} {o.replace('_', ' ')}" for o in OUTCOMES)
    tr.log_metrics(client, run_id, metrics, step=0)
    tr.set_tags(client, run_id, {tr.NOTE: note(plan, baseline, f"{result} Trials: {counted}.")})
    return metrics


def log_summary(client, run_id: str, rows: list[dict], pareto: list[dict], best_adapter: str | None) -> None:
    best = best_row(rows)
    summary: dict[str, Any] = {
        "trials": [{k: v for k, v in r.items() if k not in ("checkpoint", "config")} for r in rows],
        "pareto": [r["trial_id"] for r in pareto],
        "best_trial": best["trial_id"] if best else None,
        "best_adapter": best_adapter,
    }
    client.log_text(run_id, json.dumps(summary, indent=1, default=str), "summary.json")
