"""Fallback: load a sweep from a Ray Tune experiment directory (docs/TRACKING.md, last section).

``<storage>/<name>/<trial dir>/params.json`` (nested sampled config) and ``result.json`` (one JSON
object per reported epoch, contract metric keys plus ``epoch`` and Ray's own bookkeeping keys).
The directory records no baseline and no early-stop reason: pass ``baseline`` (dict or path to a
baseline.json; ``<dir>/baseline.json`` is used if present). Status is FAILED when Ray left an
``error.txt``, FINISHED when a result says ``done``, otherwise UNKNOWN (early-stopped or cut off).
``run_id`` is the trial directory's name.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from analysis.errors import AnalysisError
from analysis.frames import TrialRecord
from analysis.params import flatten
from analysis.sweep import Sweep


def _read_results(path: Path) -> list[dict[str, Any]]:
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut off by a killed trial
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _record(trial_dir: Path) -> TrialRecord:
    params_path = trial_dir / "params.json"
    try:
        params = json.loads(params_path.read_text()) if params_path.is_file() else {}
    except (OSError, ValueError) as err:
        raise AnalysisError(f"{params_path} is not valid JSON: {err}") from err
    results = _read_results(trial_dir / "result.json")
    history, latest = [], {}
    for i, row in enumerate(results, start=1):
        # contract keys all contain "/"; Ray's own keys (time_total_s, config, ...) do not
        metrics = {k: float(v) for k, v in row.items() if "/" in k and _is_number(v)}
        epoch = row.get("epoch", row.get("training_iteration", i))
        latest.update({k: v for k, v in metrics.items() if not math.isnan(v)})
        per_epoch = {k: v for k, v in metrics.items() if not k.startswith("model/")}
        if _is_number(epoch) and epoch >= 1 and per_epoch:
            history.append({"epoch": int(epoch), **per_epoch})
    error = trial_dir / "error.txt"
    if error.is_file():
        lines = [ln.strip() for ln in error.read_text(errors="replace").splitlines() if ln.strip()]
        status, reason = "FAILED", lines[-1] if lines else "error"
    else:
        status, reason = ("FINISHED" if any(r.get("done") for r in results) else "UNKNOWN"), None
    last = results[-1] if results else {}
    stamps = [r["timestamp"] for r in results if _is_number(r.get("timestamp"))]
    meta = {
        "run_id": trial_dir.name,
        "trial_id": str(last.get("trial_id") or trial_dir.name),
        "run_name": trial_dir.name,
        "status": status,
        "status_reason": reason,
        "device": last.get("placement/device"),
        "start_time": int(min(stamps) * 1000) if stamps else None,
        "end_time": int(max(stamps) * 1000) if stamps else None,
    }
    if isinstance(params, dict):  # search.seeds: which seed of a configuration, not a hyperparameter
        seed = params.pop("seed", None)
        if isinstance(seed, dict):
            meta.update({"config": seed.get("config"), "seed": seed.get("index")})
    return TrialRecord(meta, flatten(params) if isinstance(params, dict) else {}, latest, history)


def _baseline(path: Path, baseline: dict[str, Any] | str | Path | None) -> dict[str, Any] | None:
    if isinstance(baseline, dict):
        return baseline
    file = Path(baseline) if baseline is not None else path / "baseline.json"
    if baseline is None and not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise AnalysisError(f"baseline file {file} cannot be read as JSON: {err}") from err


def load_ray_sweep(
    path: str | Path, baseline: dict[str, Any] | str | Path | None = None, split: str | None = None
) -> Sweep:
    """Sweep from a Ray Tune experiment directory, trials ordered by directory name."""
    path = Path(path)
    if not path.is_dir():
        raise AnalysisError(f"Ray experiment directory {path} does not exist; expected <storage>/<name>/")
    trial_dirs = sorted(
        d
        for d in path.iterdir()
        if d.is_dir() and ((d / "params.json").is_file() or (d / "result.json").is_file())
    )
    if not trial_dirs:
        raise AnalysisError(
            f"{path} holds no trial directories (with params.json/result.json); expected a Ray sweep"
        )
    return Sweep.from_records(
        path.name,
        f"ray:{path}",
        [_record(d) for d in trial_dirs],
        baseline=_baseline(path, baseline),
        split=split,
    )
