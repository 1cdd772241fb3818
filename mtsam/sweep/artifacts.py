"""A trial run's files in MLflow: ``config.yaml``, ``metrics.jsonl`` and (for some) its adapter.

``metrics.jsonl`` holds one JSON object per epoch (the trainer's record: metric keys, ``epoch``,
``reported_at``, where the trial ran), as the trainer wrote it in its own run directory; the trial's
scratch directory is gone by then, so the tracker rebuilds it from the results Tune delivered (and,
for a run continued after ``--resume``, from the trial's ``result.json``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

ADAPTER_FILE, ADAPTER_DIR = "best_adapter.pt", "adapter"
RECORD_KEYS = ("epoch", "reported_at", "node_id")


def record_of(result: Mapping[str, Any]) -> dict[str, Any]:
    """The trainer's epoch record inside a Tune result (Tune's own bookkeeping keys dropped)."""
    out = {}
    for key, value in result.items():
        if "/" not in key and key not in RECORD_KEYS:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            value = None  # JSON has no NaN; the value was not a result
        if isinstance(value, (int, float, str, bool)) or value is None:
            out[key] = value
    return out


def records_from_results(path: str | Path | None) -> dict[int, dict]:
    """epoch → record, from a trial's local ``result.json`` (empty when there is none)."""
    file = Path(path) / "result.json" if path else None
    if file is None or not file.is_file():
        return {}
    out = {}
    for line in file.read_text().splitlines():
        try:
            result = json.loads(line)
        except ValueError:
            continue  # a line cut by a killed driver
        if isinstance(result, dict) and isinstance(result.get("epoch"), int):
            out[result["epoch"]] = record_of(result)
    return out


def records_from_checkpoint(trial_dir: str | Path | None) -> dict[int, dict]:
    """epoch → record, from the history in the newest training checkpoint of a trial's folder in
    the storage: a trial writes it there itself each epoch, while Tune copies ``result.json``
    there only with its own state (every few seconds), which a killed driver may not have done."""
    from mtsam.errors import CheckpointError
    from mtsam.trainer import CHECKPOINT, read_checkpoint

    if not trial_dir or "://" in str(trial_dir):
        return {}
    found = sorted(Path(trial_dir).glob(f"checkpoint_*/{CHECKPOINT}"))
    if not found:
        return {}
    try:
        history = read_checkpoint(found[-1])["history"]
    except (CheckpointError, OSError, KeyError, ValueError):
        return {}  # a checkpoint cut by the kill: the older epochs are in result.json or lost
    return {r["epoch"]: record_of(r) for r in history if isinstance(r.get("epoch"), int)}


def recovered_records(trial_dir: str | Path | None) -> dict[int, dict]:
    """epoch → record of everything a trial's folder still holds after a killed driver: Tune's
    ``result.json`` and the history in the trial's newest checkpoint."""
    records = records_from_results(trial_dir)
    for epoch, record in records_from_checkpoint(trial_dir).items():
        records.setdefault(epoch, record)
    return records


def log_config(client, run_id: str, config: Mapping[str, Any]) -> None:
    client.log_text(run_id, yaml.safe_dump(dict(config), sort_keys=False), "config.yaml")


def log_metrics_jsonl(client, run_id: str, records: Iterable[Mapping[str, Any]]) -> None:
    text = "".join(json.dumps(dict(r), sort_keys=False) + "\n" for r in records)
    client.log_text(run_id, text, "metrics.jsonl")


def log_adapter(client, run_id: str, checkpoint) -> bool:
    """The adapter of the trial's selected epoch (``best_adapter.pt`` of its last Tune checkpoint)
    → ``adapter/best_adapter.pt``; False when the checkpoint holds none."""
    if checkpoint is None:
        return False
    with checkpoint.as_directory() as folder:
        src = Path(folder) / ADAPTER_FILE
        if not src.is_file():
            return False
        client.log_artifact(run_id, str(src), artifact_path=ADAPTER_DIR)
    return True
