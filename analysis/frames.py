"""Tidy tables of a sweep, built the same way from any source (MLflow or a Ray directory).

``trials``: one row per trial. Columns, in order:
- identity/status: ``run_id``, ``trial_id``, ``run_name``, ``status``, ``status_reason`` (early-stop
  reason or error), ``outcome`` (finished / stopped_early / failed / interrupted, ``analysis.outcome``),
  ``stopped_at_epoch``, ``epochs_planned``, ``adapter``, ``weighting``, ``task``, ``device`` (where it
  trained: ``cpu`` or ``cuda:0 (NVIDIA H100 …)``), ``ranks`` (label: "32/32/4", "8" or "-"),
  ``R1``-``R3`` (ToRA ranks, from params ``adapter.r1``-``r3`` or an older JSON ``adapter.ranks``),
  ``epochs``, ``best_epoch``, ``trainable_params``, ``total_params``, ``adapter_params``,
  ``start_time``, ``end_time``, ``duration_s``;
- every hyperparameter under its dotted key, typed (``param.<key>`` if it would clash with the above);
- metrics: contract keys hold the *final* value (last epoch; for ``test/*`` the selected epoch's, per
  docs/TRACKING.md), ``best/<key>`` the ``val/*``/``train/*`` value at ``best_epoch``.
``history``: one row per trial × epoch (epoch ≥ 1): ``run_id``, ``trial_id``, ``epoch``, metric keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from analysis.outcome import outcome_of
from analysis.params import typed_series

META_COLUMNS = (
    "run_id",
    "trial_id",
    "run_name",
    "status",
    "status_reason",
    "outcome",
    "stopped_at_epoch",
    "epochs_planned",
    "adapter",
    "weighting",
    "task",
    "config",  # search.seeds > 1: the configuration (Optuna trial number) and seed of a trial;
    "seed",  # both columns only in a seeded sweep
    "device",
    "ranks",
    "R1",
    "R2",
    "R3",
    "epochs",
    "best_epoch",
    "trainable_params",
    "total_params",
    "adapter_params",
    "start_time",
    "end_time",
    "duration_s",
)
# model/* counts are logged once at step 0; they get short column names
_MODEL_KEYS = {f"model/{n}": n for n in ("trainable_params", "total_params", "adapter_params")}
_BEST_EPOCH_KEY = "best/epoch"
_INT_COLUMNS = (
    "R1",
    "R2",
    "R3",
    "config",
    "seed",
    "stopped_at_epoch",
    "epochs_planned",
    "epochs",
    "best_epoch",
    *_MODEL_KEYS.values(),
)
_BEST_OF = ("val/", "train/")  # per-epoch keys worth reading at the selected epoch
_METRIC_ORDER = ("train/", "val/", "best/train/", "best/val/", "test/")


@dataclass
class TrialRecord:
    """What a source knows about one run, before it becomes a table row."""

    meta: dict[str, Any]  # run_id, trial_id, run_name, status, status_reason, adapter, weighting, task,
    # device, times, outcome_tags (the run's mtsam.outcome / stopped_at_epoch / epochs_planned tags)
    params: dict[str, Any]  # dotted key -> typed value
    latest: dict[str, float]  # metric key -> final value (MLflow's "latest": highest step)
    history: list[dict[str, Any]] = field(default_factory=list)  # [{"epoch": e, key: value, ...}]


def tora_ranks(params: dict[str, Any]) -> list[int] | None:
    """[R1, R2, R3] from ``adapter.r1``-``r3`` (one param per scalar) or a JSON ``adapter.ranks``."""
    split = [params.get(f"adapter.r{i}") for i in (1, 2, 3)]
    if all(isinstance(r, int) for r in split):
        return split
    ranks = params.get("adapter.ranks")
    if isinstance(ranks, list) and len(ranks) == 3 and all(isinstance(r, int) for r in ranks):
        return ranks
    return None


def ranks_label(params: dict[str, Any]) -> str:
    ranks = tora_ranks(params) or params.get("adapter.ranks")
    if isinstance(ranks, list) and ranks:
        return "/".join(str(r) for r in ranks)
    rank = params.get("adapter.rank")
    return "-" if rank is None else str(rank)


def _meta_row(rec: TrialRecord, epochs: list[int]) -> dict[str, Any]:
    p, m = rec.params, rec.meta
    identity = (
        "run_id",
        "trial_id",
        "run_name",
        "status",
        "status_reason",
        "task",
        "config",
        "seed",
        "device",
    )
    row = {c: m.get(c) for c in identity}
    row["adapter"] = m.get("adapter") or p.get("adapter.type")
    row["weighting"] = m.get("weighting") or p.get("weighting.method")
    row["ranks"] = ranks_label(p)
    ranks = tora_ranks(p)
    for i in range(3):
        row[f"R{i + 1}"] = ranks[i] if ranks else None
    row["epochs"] = max(epochs) if epochs else 0
    reason = {"mtsam.status_reason": m["status_reason"]} if m.get("status_reason") else {}
    found = outcome_of(m.get("status"), {**reason, **(m.get("outcome_tags") or {})}, row["epochs"])
    row.update(found)
    if row["epochs_planned"] is None and isinstance(p.get("train.epochs"), int):
        row["epochs_planned"] = p["train.epochs"]
    best = rec.latest.get(_BEST_EPOCH_KEY)
    row["best_epoch"] = None if best is None or math.isnan(best) else int(best)
    for key, name in _MODEL_KEYS.items():
        value = rec.latest.get(key)
        row[name] = None if value is None or math.isnan(value) else int(value)
    start, end = m.get("start_time"), m.get("end_time")
    row["start_time"] = pd.Timestamp(start, unit="ms", tz="UTC") if start else pd.NaT
    row["end_time"] = pd.Timestamp(end, unit="ms", tz="UTC") if end else pd.NaT
    row["duration_s"] = (end - start) / 1000.0 if start and end else math.nan
    return row


def _metric_row(rec: TrialRecord, best_epoch: int | None) -> dict[str, float]:
    row = {k: v for k, v in rec.latest.items() if k not in _MODEL_KEYS and k != _BEST_EPOCH_KEY}
    at_best = next((h for h in rec.history if h.get("epoch") == best_epoch), None)
    if at_best is not None:
        row.update({f"best/{k}": v for k, v in at_best.items() if k.startswith(_BEST_OF)})
    return row


def _metric_sort_key(key: str) -> tuple[int, str]:
    for i, prefix in reversed(list(enumerate(_METRIC_ORDER))):  # longest prefixes ("best/...") first
        if key.startswith(prefix):
            return (i, key)
    return (len(_METRIC_ORDER), key)


def build_trials(records: list[TrialRecord]) -> tuple[pd.DataFrame, list[str]]:
    """Trial table and the names of its hyperparameter columns."""
    metas, metric_rows = [], []
    for rec in records:
        meta = _meta_row(rec, [h["epoch"] for h in rec.history])
        metas.append(meta)
        metric_rows.append(_metric_row(rec, meta["best_epoch"]))
    index = pd.RangeIndex(len(records))
    columns: dict[str, pd.Series] = {}
    for name in META_COLUMNS:
        values = [m[name] for m in metas]
        if name in ("start_time", "end_time"):
            columns[name] = pd.Series(values, index=index, dtype="datetime64[ms, UTC]")
        elif name in _INT_COLUMNS:  # nullable: a failed trial may lack them
            columns[name] = pd.Series([pd.NA if v is None else v for v in values], index=index, dtype="Int64")
        elif name == "duration_s":
            columns[name] = pd.Series(values, index=index, dtype=float)
        else:
            columns[name] = typed_series(values, index)
    for name in ("task", "config", "seed"):  # only baseline runs have a task, seeded sweeps seeds
        if all(m[name] is None for m in metas):
            del columns[name]
    param_names = sorted({k for rec in records for k in rec.params})
    param_columns = []
    for key in param_names:
        name = f"param.{key}" if key in columns else key
        columns[name] = typed_series([rec.params.get(key) for rec in records], index)
        param_columns.append(name)
    for key in sorted({k for row in metric_rows for k in row}, key=_metric_sort_key):
        columns[key] = pd.Series([row.get(key, math.nan) for row in metric_rows], index=index, dtype=float)
    return pd.DataFrame(columns, index=index), param_columns


def build_history(records: list[TrialRecord]) -> pd.DataFrame:
    rows = [
        {"run_id": rec.meta.get("run_id"), "trial_id": rec.meta.get("trial_id"), **h}
        for rec in records
        for h in sorted(rec.history, key=lambda h: h["epoch"])
    ]
    if not rows:
        return pd.DataFrame(columns=["run_id", "trial_id", "epoch"])
    frame = pd.DataFrame(rows)
    keys = sorted(
        (c for c in frame.columns if c not in ("run_id", "trial_id", "epoch")), key=_metric_sort_key
    )
    frame = frame[["run_id", "trial_id", "epoch", *keys]]
    frame["epoch"] = frame["epoch"].astype("int64")
    return frame.reset_index(drop=True)
