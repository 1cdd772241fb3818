"""Hyperparameter importance with Optuna's own evaluators, on the full-budget trials only.

An in-memory Optuna study is rebuilt from the MLflow trials: one COMPLETE trial per full-budget
trial with its searched params (distributions inferred from the values seen) and its validation
objective. Early-stopped trials are left out: their values are not final results, and counting
them is exactly the bias the search avoids (they are PRUNED in the sweep's own study). Two
evaluators: fANOVA (Optuna's default, a random-forest variance decomposition) and PED-ANOVA
(what makes a trial land in the top quantile). Params present in only some trials (conditional,
e.g. ``weighting.temperature`` of DWA) are outside Optuna's intersection space and are listed.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pandas as pd

from analysis.outcome import full_budget

MIN_TRIALS = 3


@dataclass
class Importance:
    table: pd.DataFrame  # param, fanova, ped_anova (each sums to 1 over the params)
    trials: int  # full-budget trials used
    notes: list[str]


def searched_params(trials: pd.DataFrame, param_columns: Sequence[str]) -> list[str]:
    """Hyperparameter columns whose value differs between trials (what the sweep searched)."""
    out = []
    for column in param_columns:
        values = trials[column].dropna()
        if values.empty or column.startswith(("faults.", "param.")):
            continue
        if values.map(lambda v: repr(v)).nunique() > 1:
            out.append(column)
    return out


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # "A new study created in memory" etc.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning of some Optuna versions
            yield
    finally:
        optuna.logging.set_verbosity(level)


def _distribution(values: pd.Series):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    present = values.dropna()
    if pd.api.types.is_bool_dtype(present) or not pd.api.types.is_numeric_dtype(present):
        return CategoricalDistribution(sorted(present.astype(str).unique())), str
    lo, hi = float(present.min()), float(present.max())
    if pd.api.types.is_integer_dtype(present):
        return IntDistribution(int(lo), int(hi)), int
    log = lo > 0 and hi / lo > 20
    return FloatDistribution(lo, hi, log=log), float


def param_importance(
    trials: pd.DataFrame, params: Sequence[str], value: str, higher_is_better: bool = True
) -> Importance:
    """fANOVA and PED-ANOVA importances of ``params`` for ``value`` over the full-budget trials."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tqdm's "IProgress not found" in a notebook, at import
        import optuna
        from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    rows = full_budget(trials)
    rows = rows[rows[value].notna() & rows[value].map(lambda v: math.isfinite(float(v)))]
    notes: list[str] = []
    everywhere = [p for p in params if p in rows.columns and rows[p].notna().all()]
    conditional = [p for p in params if p in rows.columns and p not in everywhere]
    if conditional:
        notes.append(
            f"not rated (set in only some full-budget trials, outside Optuna's intersection space): "
            f"{', '.join(conditional)}"
        )
    varying = [p for p in everywhere if rows[p].map(repr).nunique() > 1]
    empty = pd.DataFrame(columns=["param", "fanova", "ped_anova"])
    if len(rows) < MIN_TRIALS or not varying:
        notes.insert(
            0,
            f"importance needs ≥ {MIN_TRIALS} full-budget trials and a param that varies among them "
            f"(have {len(rows)} trials, {len(varying)} varying params)",
        )
        return Importance(empty, len(rows), notes)
    dists = {p: _distribution(rows[p]) for p in varying}
    with _quiet_optuna():
        study = optuna.create_study(direction="maximize" if higher_is_better else "minimize")
        study.add_trials(
            [
                optuna.trial.create_trial(
                    params={p: cast(row[p]) for p, (_, cast) in dists.items()},
                    distributions={p: d for p, (d, _) in dists.items()},
                    value=float(row[value]),
                )
                for _, row in rows.iterrows()
            ]
        )
        fanova = optuna.importance.get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
        try:
            ped = optuna.importance.get_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
        except (ValueError, RuntimeError) as err:  # too few trials above the quantile
            ped = {}
            notes.append(f"PED-ANOVA not computed: {err}")
    table = pd.DataFrame(
        {
            "param": list(fanova),
            "fanova": [float(v) for v in fanova.values()],
            "ped_anova": [float(ped.get(p, math.nan)) for p in fanova],
        }
    )
    return Importance(table.reset_index(drop=True), len(rows), notes)
