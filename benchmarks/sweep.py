"""p4: how much of a sweep's wall time the trials spend training and evaluating.

Runs the embedded quickstart sweep exactly as a user does (``python tune/search.py``, in a fresh
subprocess, with storage and MLflow store in a scratch folder), then reads every trial's
``result.json`` (one JSON per reported epoch) from the Ray experiment folder:

    efficiency = Σ_trials Σ_epochs (train/epoch_time_s + train/eval_time_s)
                 ÷ (trials-phase wall time × concurrent trials)

The trials phase runs from the first trial's start (its first report's ``reported_at`` minus its
``time_total_s``) to the last report of any trial (``reported_at`` is the trainable's float clock;
Ray's own ``timestamp`` is whole seconds, ±5 % on a 20 s phase). Also given:
the same sum over the whole command's wall time (Ray start, single-task baselines, MLflow, report),
and the slot occupancy Σ trial wall time ÷ (phase × concurrent), which separates time lost between
trials (scheduling, actor reuse) from time lost inside them (model build, checkpoints, reports).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = "bench-p4"
TARGET = 0.90


def _unavailable(reason: str) -> dict:
    return {"value": None, "target": f">= {TARGET}", "met": None, "reason": reason}


def concurrency(overrides: list[str]) -> int:
    """Trials that can run at once: max_concurrent, capped by the local Ray's CPUs (and GPUs)."""
    from mtsam.sweep.config import load_sweep_config

    cfg, _ = load_sweep_config(None, overrides)
    slots = cfg.search.max_concurrent
    if cfg.ray.address is None and cfg.ray.num_cpus:
        slots = min(slots, int(cfg.ray.num_cpus // cfg.resources.cpu))
    return max(1, slots)


def _reported(record: dict) -> float:
    # "reported_at": float seconds from the trainable; Ray's "timestamp" is whole seconds (±1 s).
    return record.get("reported_at", record["timestamp"])


def read_trials(exp_dir: Path) -> list[dict]:
    trials = []
    for path in sorted(exp_dir.glob("*/result.json")):
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if not records:
            continue
        inside = sum(r.get("train/epoch_time_s", 0.0) + r.get("train/eval_time_s", 0.0) for r in records)
        trial = {
            "trial": path.parent.name,
            "epochs": len(records),
            "inside_s": inside,
            # the first report's time_total_s is measured from Ray's first train() call on the trial
            "start": _reported(records[0]) - records[0]["time_total_s"],
            "end": _reported(records[-1]),
        }
        # Wall time, not Ray's time_total_s: with reports running ahead, Ray's per-iteration clock
        # leaves out the driver's turn-around while the trial already trains its next epoch.
        trial["total_s"] = trial["end"] - trial["start"]
        trials.append(trial)
    return trials


def idle_slots(trials: list[dict], slots: int) -> dict:
    """Slot-seconds with fewer than ``slots`` trials running: at the start (before every slot has
    had a trial), at the end (no further trial starts) and between trials (scheduling gaps)."""
    events = sorted({t["start"] for t in trials} | {t["end"] for t in trials})
    first_full = None
    last_start = max(t["start"] for t in trials)
    idle = {"head": 0.0, "between": 0.0, "tail": 0.0}
    for a, b in zip(events, events[1:]):
        running = sum(1 for t in trials if t["start"] <= a and t["end"] >= b)
        if running >= slots and first_full is None:
            first_full = a
        gap = max(0, slots - running) * (b - a)
        part = "head" if first_full is None else ("tail" if a >= last_start else "between")
        idle[part] += gap
    return {k: round(v, 1) for k, v in idle.items()}


def efficiency(trials: list[dict], slots: int, command_wall: float) -> dict:
    inside = sum(t["inside_s"] for t in trials)
    phase = max(t["end"] for t in trials) - min(t["start"] for t in trials)
    value = inside / (phase * slots)
    idle = idle_slots(trials, slots)
    return {
        "value": round(value, 3),
        "target": f">= {TARGET}",
        "met": value >= TARGET,
        "trials": len(trials),
        "epochs": sum(t["epochs"] for t in trials),
        "concurrent_trials": slots,
        "inside_train_eval_s": round(inside, 1),
        "trial_time_s": round(sum(t["total_s"] for t in trials), 1),
        "trials_phase_wall_s": round(phase, 1),
        "command_wall_s": round(command_wall, 1),
        "slot_occupancy": round(sum(t["total_s"] for t in trials) / (phase * slots), 3),
        "idle_slot_s": idle,
        # diagnostic: the same ratio without the end-of-sweep slots that no trial was left to fill
        "efficiency_without_tail": round(inside / (phase * slots - idle["tail"]), 3),
        "end_to_end_efficiency": round(inside / (command_wall * slots), 3),
        "per_trial_overhead_s": round(sum(t["total_s"] - t["inside_s"] for t in trials) / len(trials), 2),
    }


def command_phases(tracking_uri: str, trials: list[dict], start: float, end: float) -> dict:
    """Where the whole command's wall time goes (seconds), from the MLflow store the sweep wrote and
    the trials' results, all on this machine's clock:
    - ``startup``: imports, Ray start, the MLflow store (schema migrations) until the parent run opens;
    - ``baselines``: the single-task runs trained and logged by this command (none when cached);
    - ``trial_workers_start``: Tune and the Optuna study set up, the trial actors start (import
      torch) until the first trial trains;
    - ``trials_phase``: what p4 is measured over;
    - ``end``: the last results through the driver, the report, MLflow runs closed, Ray shut down
      (``mlflow_after_last_report``: how long after the last report the last trial run closed)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=5000)
    by_role: dict[str, list] = {}
    for run in runs:
        if run.info.start_time / 1000 >= start:  # opened by this command
            by_role.setdefault(run.data.tags.get("mtsam.role"), []).append(run.info)
    ends = {role: [r.end_time / 1000 for r in infos if r.end_time] for role, infos in by_role.items()}
    opened = min((r.start_time / 1000 for r in by_role.get("sweep", [])), default=start)
    baselines_done = max(ends.get("baseline", []), default=opened)
    first, last = min(t["start"] for t in trials), max(t["end"] for t in trials)
    closed = ends.get("trial", [])
    phases = {
        "startup": opened - start,
        "baselines": baselines_done - opened,
        "trial_workers_start": first - baselines_done,
        "trials_phase": last - first,
        "end": end - last,
        "mlflow_after_last_report": max(closed, default=last) - last,
    }
    return {k: round(v, 1) for k, v in phases.items()}


def run_search(
    storage: Path, name: str, overrides: list[str], timeout: float, config: Path | None = None
) -> tuple[str | None, float, float]:
    """``python tune/search.py`` as a user runs it, in a fresh subprocess, storage (and its default
    MLflow store, ``<storage>/mlflow.db``) in ``storage``. Returns (why it failed or None, wall
    seconds, Unix time at the start)."""
    cmd = [sys.executable, str(ROOT / "tune" / "search.py"), "--storage", str(storage), "--name", name]
    cmd += ["--config", str(config)] if config else []
    cmd += [f"--set={o}" for o in overrides]
    start, clock = time.perf_counter(), time.time()
    try:
        proc = subprocess.run(cmd, cwd=storage, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"sweep did not finish within {timeout} s", time.perf_counter() - start, clock
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"sweep failed (exit {proc.returncode}): {tail[0]}", wall, clock
    return None, wall, clock


def run_once(args, overrides: list[str], storage: Path) -> dict:
    failed, wall, clock = run_search(storage, NAME, overrides, args.sweep_timeout)
    if failed:
        return _unavailable(failed)
    trials = read_trials(storage / NAME)
    if not trials:
        return _unavailable("sweep finished but no trial result.json was found")
    result = efficiency(trials, concurrency(overrides), wall)
    store = f"sqlite:///{storage / 'mlflow.db'}"  # the quickstart's default tracking store
    result["command_phases_s"] = command_phases(store, trials, clock, clock + wall)
    return result


def bench_p4(args) -> dict:
    """``args.repeats`` whole sweeps, each in a fresh scratch store (baselines retrained each time)."""
    try:
        import mtsam.sweep.cli  # noqa: F401
        import mtsam.sweep.runner  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - the platform is still being written
        return _unavailable(f"mtsam.sweep not importable: {type(exc).__name__}: {exc}")
    overrides = [f"search.num_samples={args.sweep_samples}"] if args.sweep_samples else []
    runs = []
    for r in range(args.repeats):
        if args.sweep_storage:
            storage = Path(args.sweep_storage).resolve() / f"repeat{r}"
            storage.mkdir(parents=True, exist_ok=False)
            runs.append(run_once(args, overrides, storage))
        else:
            with tempfile.TemporaryDirectory(prefix="mtsam-bench-sweep-") as tmp:
                runs.append(run_once(args, overrides, Path(tmp)))
        if runs[-1]["value"] is None:
            return runs[-1]
    values = [run["value"] for run in runs]
    middle = statistics.median(values)
    return {
        "value": round(middle, 3),
        "min": min(values),
        "max": max(values),
        "repeats": len(runs),
        "target": f">= {TARGET}",
        "met": middle >= TARGET,
        "command": " ".join(["python tune/search.py --storage <scratch> --name", NAME, *overrides]),
        "sweeps": runs,
    }
