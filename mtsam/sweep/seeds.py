"""Seeds of one configuration (``search.seeds: k``): k Tune trials share the values Optuna drew.

Seed ``s`` of a configuration trains with ``model.seed`` and ``train.seed`` both moved by ``s`` —
the adapters' init, the no-mask jitter, data order, augmentation and dropout — while the frozen SAM
weights, the dataset and the train/val split stay those of seed 0 (they are the problem, not the
noise). A trial's Tune config carries ``seed: {"index": s, "config": n}`` (Optuna trial number n);
the searcher tells Optuna the mean over the k seeds once all have ended (one pruned seed prunes the
configuration), the scheduler stops a configuration's other seeds once one is stopped, and MLflow
gets one configuration run beside the seeds' runs with the mean and std of every metric per epoch.

The statistics here are what every table says about a configuration: mean, sample std (n − 1)
and n; ``welch`` is the test the report states for "differs by more than the seed spread".
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from typing import Any

SEED_KEY = "seed"


def seed_of(tune_config: Mapping[str, Any] | None) -> tuple[int | None, int]:
    """(Optuna number of the configuration, seed index) of a trial; (None, 0) without seeds."""
    entry = (tune_config or {}).get(SEED_KEY)
    if not isinstance(entry, Mapping):
        return None, 0
    return int(entry["config"]), int(entry["index"])


def apply_seed(run_config: dict, index: int) -> dict:
    """The run config (dict) of seed ``index``: model and training seeds moved by ``index``."""
    if not index:
        return run_config
    cfg = copy.deepcopy(run_config)
    cfg.setdefault("model", {})["seed"] = int(cfg["model"].get("seed", 0)) + index
    cfg.setdefault("train", {})["seed"] = int(cfg["train"].get("seed", 0)) + index
    return cfg


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def mean_std(values: Iterable[float]) -> tuple[float | None, float | None, int]:
    """(mean, sample std with n − 1, n) of the finite values; std is None for n < 2."""
    xs = [float(v) for v in values if finite(v)]
    if not xs:
        return None, None, 0
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, None, len(xs)
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)), len(xs)


def per_epoch_stats(records: Mapping[str, Mapping[int, Mapping[str, Any]]], epoch: int) -> dict[str, float]:
    """Seeds' records of one epoch (run → epoch → record) → ``{key: mean, key_std: std, seeds: n}``
    over every numeric key all seeds have."""
    rows = [by_epoch[epoch] for by_epoch in records.values() if epoch in by_epoch]
    if not rows:
        return {}
    return {"seeds": float(len(rows)), **means_with_std(rows)}


def means_with_std(rows: list[Mapping[str, Any]]) -> dict[str, float]:
    """``{key: mean, key_std: sample std}`` over the rows, for every key all rows have a finite value of."""
    first = rows[0] if rows else {}
    keys = [k for k, v in first.items() if finite(v) and all(finite(r.get(k)) for r in rows)]
    out: dict[str, float] = {}
    for key in keys:
        mean, std, _ = mean_std(r[key] for r in rows)
        out[key] = mean
        if std is not None:
            out[f"{key}_std"] = std
    return out


def welch(a: list[float], b: list[float] | None = None) -> float | None:
    """Two-sided p-value of Welch's t-test of mean(a) = mean(b), or of the one-sample t-test of
    mean(a) = 0 when ``b`` is None; None when a sample has fewer than 2 values or no spread."""
    from scipy import stats

    a = [x for x in a if finite(x)]
    if len(a) < 2:
        return None
    if b is None:
        result = stats.ttest_1samp(a, 0.0)
    else:
        b = [x for x in b if finite(x)]
        if len(b) < 2:
            return None
        result = stats.ttest_ind(a, b, equal_var=False)
    p = float(result.pvalue)
    return p if math.isfinite(p) else None


OUTCOME_ORDER = {"finished": 0, "stopped_early": 1, "failed": 2}


def config_rows(rows: list[dict], mode: str) -> list[dict]:
    """Per-trial rows (``report.trial_rows``) → one row per configuration, in the same shape:
    ``score`` and every ``test`` metric are means over the seeds (``score_std``, ``test_std``,
    ``seeds`` = n, ``seed_scores``), the outcome is the worst seed's (a stopped seed means a pruned
    configuration), and ``trial_id`` / ``checkpoint`` are those of the seed with the best validation
    score (whose adapter stands for the configuration). Sorted like trial rows: full-budget first,
    best mean first."""
    groups: dict[int, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["config_number"], []).append(row)
    sign = 1 if mode == "max" else -1
    out = []
    for number, members in groups.items():
        members.sort(key=lambda r: r["seed"])
        outcome = max((r["outcome"] for r in members), key=lambda o: OUTCOME_ORDER.get(o, 3))
        scored = [r for r in members if finite(r["score"])]
        lead = max(scored, key=lambda r: sign * r["score"]) if scored else members[0]
        score, score_std, n = mean_std(r["score"] for r in members)
        test, test_std = {}, {}
        keys = [k for k in lead["test"] if all(k in r["test"] for r in members)]
        for key in keys:
            test[key], std, _ = mean_std(r["test"][key] for r in members)
            if std is not None:
                test_std[key] = std
        status = {"finished": "finished", "failed": "failed"}.get(outcome)
        if status is None:
            status = f"stopped@{min(r['epochs'] for r in members)}"
        out.append(
            {
                **lead,
                "name": f"{lead['name'].rsplit('-', 1)[0]}-config{number}",
                "status": status,
                "outcome": outcome,
                "epochs": min(r["epochs"] for r in members),
                "score": score if n == len(members) else None,
                "score_std": score_std,
                "seeds": len(members),
                "seed_scores": [r["score"] for r in members],
                "seed_trials": [r["trial_id"] for r in members],
                "test": test,
                "test_std": test_std,
                "best_epoch": [r["best_epoch"] for r in members],
            }
        )
    out.sort(
        key=lambda r: (
            OUTCOME_ORDER.get(r["outcome"], 3),
            r["score"] is None,
            -sign * r["score"] if r["score"] is not None else 0,
        )
    )
    return out


def spread_line(configs: list[dict], metric: str, seeds: int) -> str | None:
    """What the seed spread says of the best full-budget configuration: Welch's t-test against the
    runner-up and a one-sample t-test against 0 (two-sided, at 5 %), on the seeds' validation
    objective."""
    done = [c for c in configs if c["outcome"] == "finished" and c["score"] is not None]
    if not done:
        return None
    best = done[0]
    parts = [f"best configuration {metric} {best['score']:+.3g} ± {best['score_std'] or 0:.2g} (n={seeds})"]

    def verdict(p: float | None) -> str:
        if p is None:
            return "not testable (fewer than 2 seeds or no spread)"
        return f"p = {p:.3g}: {'differs' if p < 0.05 else 'does not differ'} at 5 %"

    if "delta_b" in metric:
        parts.append(f"vs 0: {verdict(welch(best['seed_scores']))}")
    if len(done) > 1:
        runner = done[1]
        parts.append(
            f"vs runner-up {runner['name']} ({runner['score']:+.3g}): "
            f"{verdict(welch(best['seed_scores'], runner['seed_scores']))}"
        )
    return "; ".join(parts) + " (Welch's t-test over seeds, two-sided)"
