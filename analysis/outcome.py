"""How each trial ended, and which trials are compared.

Read from the trial tags of the tracking contract (``mtsam.outcome`` ∈ finished / stopped_early /
failed / interrupted, ``mtsam.stopped_at_epoch``, ``mtsam.epochs_planned``). Stores written before
that contract have no ``mtsam.outcome``: there an early-stopped trial is a KILLED run with a
``mtsam.status_reason``, and a KILLED run without one was interrupted.

Only ``finished`` trials ran their full budget: they alone are ranked, averaged and set axis ranges.
An early-stopped trial's value is that of a shorter training run, so it is shown, marked
("stopped@2"), but never compared with full-budget results.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

OUTCOMES = ("finished", "stopped_early", "failed", "interrupted")
OUTCOME_TAG, STOPPED_AT_TAG, PLANNED_TAG = "mtsam.outcome", "mtsam.stopped_at_epoch", "mtsam.epochs_planned"


def _int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def outcome_of(status: str | None, tags: Mapping[str, str], epochs_logged: int) -> dict[str, Any]:
    """{"outcome", "stopped_at_epoch", "epochs_planned"} of one run (contract tags, else the fallback)."""
    outcome = tags.get(OUTCOME_TAG)
    stopped_at = _int(tags.get(STOPPED_AT_TAG))
    if outcome not in OUTCOMES:  # a store from before the contract
        if status == "FINISHED":
            outcome = "finished"
        elif status == "FAILED":
            outcome = "failed"
        elif status == "KILLED" and tags.get("mtsam.status_reason"):
            outcome = "stopped_early"
        else:
            outcome = "interrupted"  # KILLED without reason, RUNNING, SCHEDULED
    if outcome == "stopped_early" and stopped_at is None:
        stopped_at = epochs_logged or None
    return {"outcome": outcome, "stopped_at_epoch": stopped_at, "epochs_planned": _int(tags.get(PLANNED_TAG))}


def outcome_label(row: Mapping[str, Any]) -> str:
    """Short text for tables and legends: "finished", "stopped@2", "failed", "interrupted"."""
    outcome = row.get("outcome")
    if outcome == "stopped_early":
        at = row.get("stopped_at_epoch")
        return f"stopped@{int(at)}" if at is not None and not pd.isna(at) else "stopped early"
    return str(outcome)


def full_budget(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials that ran their full budget (the only ones compared)."""
    if "outcome" not in trials.columns:
        return trials
    return trials[trials["outcome"] == "finished"]


def stopped_early(trials: pd.DataFrame) -> pd.DataFrame:
    if "outcome" not in trials.columns:
        return trials.iloc[:0]
    return trials[trials["outcome"] == "stopped_early"]


def counts(trials: pd.DataFrame) -> dict[str, int]:
    """Trials per outcome, every outcome listed (zeros included)."""
    found = trials["outcome"].value_counts() if "outcome" in trials.columns else pd.Series(dtype=int)
    return {o: int(found.get(o, 0)) for o in OUTCOMES}
