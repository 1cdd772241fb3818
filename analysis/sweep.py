"""``Sweep``: the loaded tables of one sweep plus its baseline, whatever the source."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from analysis.delta import (
    DELTA_COLUMNS,
    SPLITS,
    add_delta_b,
    delta_b_frame,
    metric_columns,
    normalise_baseline,
    resolve_split,
)
from analysis.errors import AnalysisError
from analysis.frames import TrialRecord, build_history, build_trials
from analysis.objective import MODE_TAG, OBJECTIVE_TAG, Objective, resolve_objective
from analysis.outcome import full_budget


@dataclass(frozen=True)
class Sweep:
    """One sweep as tidy tables (column reference: ``analysis.frames``).

    ``trials`` carries recomputed Δb (percent) when a baseline is known: ``val_delta_b_task``,
    ``val_delta_b_metric``, ``test_delta_b_task``, ``test_delta_b_metric`` at each trial's selected
    epoch, and ``delta_b_task``/``delta_b_metric`` on ``split`` (kept for callers that pick one
    split); without a baseline those columns are absent and ``notes`` says so. ``objective`` is what
    everything ranks by: the sweep's own validation objective (``analysis.objective``).
    """

    name: str
    source: str  # "mlflow:<uri>" or "ray:<path>"
    trials: pd.DataFrame
    history: pd.DataFrame
    param_columns: tuple[str, ...]
    split: str  # "test" or "val": the metrics Δb and the tables use
    baseline: dict[str, Any] | None = None
    parent_run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)  # the parent run's tags
    baseline_runs: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: tuple[str, ...] = ()
    parent_metrics: dict[str, float] = field(default_factory=dict)  # sweep/..., trivial/...
    objective: Objective | None = None  # None: no trial has a validation metric

    @classmethod
    def from_records(
        cls,
        name: str,
        source: str,
        records: list[TrialRecord],
        baseline: Mapping[str, Any] | None = None,
        split: str | None = None,
        **extra: Any,
    ) -> Sweep:
        if not records:
            raise AnalysisError(f"sweep '{name}' ({source}) has no trials; expected at least one trial run")
        trials, param_columns = build_trials(records)
        if split is None and baseline is not None:
            # a baseline with only val metrics decides the split
            full = normalise_baseline(baseline)
            split = "test" if full.get("test") and metric_columns(trials, "test") else "val"
        split = resolve_split(trials, split)
        sweep = cls(
            name=name,
            source=source,
            trials=trials,
            history=build_history(records),
            param_columns=tuple(param_columns),
            split=split,
            **extra,
        )
        try:
            return sweep.rebase(baseline)
        except AnalysisError as err:
            # e.g. every trial failed before its first evaluation: still a sweep worth reporting
            unrated = sweep.rebase(None)
            note = f"baseline not applied, Δb columns are absent: {err}"
            notes = (*(n for n in unrated.notes if not n.startswith("no baseline")), note)
            return dataclasses.replace(unrated, baseline=dict(baseline or {}), notes=notes)

    @property
    def has_delta_b(self) -> bool:
        return all(c in self.trials.columns for c in DELTA_COLUMNS)

    def rebase(self, baseline: Mapping[str, Any] | None, split: str | None = None) -> Sweep:
        """A copy with Δb recomputed against ``baseline`` (baseline.json form, or one split's
        ``{task: {metric: value}}``; directions default to the stored ones, then the contract's)."""
        split = resolve_split(self.trials, split or self.split)
        notes = [n for n in self.notes if not n.startswith(("no baseline", "no ranking"))]
        if baseline is None:
            full = None
            notes.append("no baseline: Δb columns are absent (the sweep stored no baseline.json)")
        else:
            full = normalise_baseline(baseline, split)
            if "directions" not in full and self.baseline and "directions" in self.baseline:
                full["directions"] = self.baseline["directions"]
        trials = add_delta_b(self.trials, full, split)
        trials = trials.drop(columns=[f"{s}_{c}" for s in SPLITS for c in DELTA_COLUMNS], errors="ignore")
        for part in SPLITS if full else ():
            if full.get(part) and metric_columns(trials, part):
                same = part == split and all(c in trials.columns for c in DELTA_COLUMNS)
                frame = trials[list(DELTA_COLUMNS)] if same else delta_b_frame(trials, full, part)
                trials[[f"{part}_{c}" for c in DELTA_COLUMNS]] = frame.to_numpy()
        trials.attrs.update({k: v for k, v in self.tags.items() if k in (OBJECTIVE_TAG, MODE_TAG)})
        try:
            objective = resolve_objective(trials, self.tags)
        except AnalysisError as err:
            objective = None
            notes.append(f"no ranking: {err}")
        return dataclasses.replace(
            self, trials=trials, baseline=full, split=split, notes=tuple(notes), objective=objective
        )

    @property
    def compared(self) -> pd.DataFrame:
        """Full-budget trials only (early-stopped ones are shown, never compared)."""
        return full_budget(self.trials)

    @property
    def trivial(self) -> dict[str, dict[str, dict[str, float]]]:
        """Trivial-predictor metrics from the parent's ``trivial/<split>/<task>/<metric>`` (issue #16)."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for key, value in self.parent_metrics.items():
            parts = key.split("/")
            if len(parts) == 4 and parts[0] == "trivial" and parts[1] in SPLITS:
                out.setdefault(parts[1], {}).setdefault(parts[2], {})[parts[3]] = value
        return out

    def summary(self) -> dict[str, Any]:
        """Counts a report header shows."""
        status = self.trials["status"].value_counts(dropna=False)
        outcomes = self.trials["outcome"].value_counts() if "outcome" in self.trials.columns else {}
        return {
            "sweep": self.name,
            "source": self.source,
            "parent_run_id": self.parent_run_id,
            "trials": len(self.trials),
            "epochs": len(self.history),
            **{f"status {k}": int(v) for k, v in status.items()},
            **{f"outcome {k}": int(v) for k, v in dict(outcomes).items()},
        }
