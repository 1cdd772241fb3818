"""MLflow store helpers shared by the sweep driver, the trial callback and the baselines.

Only ``MlflowClient`` is used (no fluent ``mlflow.start_run`` global state), so the driver can keep
a parent run and many child runs open at once. Keys and tags follow docs/TRACKING.md.
"""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mtsam.errors import ConfigError

ROLE = "mtsam.role"
PARENT = "mlflow.parentRunId"
TRIAL_ID = "mtsam.trial_id"
STATUS_REASON = "mtsam.status_reason"
OUTCOME, STOPPED_AT, EPOCHS_PLANNED = "mtsam.outcome", "mtsam.stopped_at_epoch", "mtsam.epochs_planned"
OPTUNA_TRIAL, NOTE = "mtsam.optuna_trial", "mlflow.note.content"
# The MLflow 3 UI opens an experiment of this kind on its runs table (without it: the GenAI overview
# of traces). The values are the UI's ExperimentKind enum; "custom_model_development" is model training.
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
# MLflow run status of each trial outcome: an early stop is a result, not a crash.
OUTCOME_STATUS = {
    "finished": "FINISHED",
    "stopped_early": "FINISHED",
    "failed": "FAILED",
    "interrupted": "KILLED",
}
MAX_KEY, MAX_VALUE, MAX_TAG = 250, 6000, 8000  # MLflow's limits for param keys/values and tag values
EPOCH_PREFIXES = ("train/", "val/", "best/", "param/")  # param/: PBT's values per epoch
SENTINEL = "train/loss/total"  # logged every epoch: its history tells which epochs a run already has


def check_tracking_uri(uri: str, creatable: Iterable[Path] = ()) -> None:
    """Fail before anything starts (MLflow would create files or retry a dead server for minutes).

    ``creatable``: directories the sweep itself will create (a default store under its storage).
    """
    creatable = {Path(p).resolve() for p in creatable}
    if uri.startswith("sqlite:"):
        path = Path(uri.removeprefix("sqlite:").removeprefix("///"))
        if not path.is_absolute() or str(path) in ("", ":memory:"):
            raise ConfigError(f"tracking URI {uri}: expected sqlite:////absolute/path/mlflow.db")
        parent = path.parent
        if not parent.is_dir() and not any(
            parent == c or c in parent.parents or parent in c.parents for c in creatable
        ):
            raise ConfigError(f"tracking URI {uri}: directory {parent} does not exist")
        if path.is_file():
            with open(path, "rb") as fh:
                if path.stat().st_size and fh.read(16) != b"SQLite format 3\x00":
                    raise ConfigError(f"tracking URI {uri}: {path} is not an SQLite database")
    elif uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5).close()
        except urllib.error.HTTPError:
            pass  # something answers; MLflow's own calls will say what is wrong
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise ConfigError(
                f"tracking URI {uri} is unreachable ({reason}); start the MLflow server first"
            ) from None
    elif uri.startswith("file:") or "://" not in uri:
        path = Path(uri.removeprefix("file://")).expanduser()
        if not path.is_dir() and not path.parent.is_dir():
            raise ConfigError(f"tracking URI {uri}: directory {path.parent} does not exist")


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def ensure_experiment(mlflow_client, name: str, tracking_uri: str) -> str:
    """The experiment's id, created on first use. A local sqlite store keeps artifacts next to the
    database (MLflow's default would be ./mlruns of whatever directory the command ran in)."""
    exp = mlflow_client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            mlflow_client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:"):
        db = Path(tracking_uri.removeprefix("sqlite:").removeprefix("///"))
        location = (db.parent / "mlartifacts" / name).as_uri()
    return mlflow_client.create_experiment(
        name, artifact_location=location, tags={EXPERIMENT_KIND: MODEL_TRAINING}
    )


def mark_model_training(mlflow_client, experiment_id: str) -> None:
    """Tag an experiment (also one an older version created) so the UI opens its runs table."""
    exp = mlflow_client.get_experiment(experiment_id)
    if exp.tags.get(EXPERIMENT_KIND) != MODEL_TRAINING:
        mlflow_client.set_experiment_tag(experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)


def stop_note(scheduler: str, epoch: int, planned: int = 0, with_configuration: bool = False) -> str:
    """How a trial that ended below its budget is described: stopped by the scheduler, or (with
    ``search.seeds``) together with its configuration because a sibling seed was."""
    at = f"at epoch {epoch}" + (f" of {planned}" if planned else "")
    at = "before its first epoch" if epoch == 0 else at
    if with_configuration:
        return f"stopped {at} with its configuration (another seed was stopped by {scheduler})"
    return f"stopped by {scheduler} {at}"


def final_outcome(outcome: str, epoch: int, records: Mapping[int, Any], planned: int) -> tuple[str, int]:
    """A trial's outcome and last epoch, from its epoch records when they go further than Tune's last
    result (which lags behind a killed driver); a failure stays a failure."""
    if outcome == "failed" or not records or max(records) <= epoch:
        return outcome, epoch
    epoch = max(records)
    return ("stopped_early" if epoch < planned else "finished"), epoch


def outcome_tags(
    outcome: str,
    epoch: int,
    planned: int,
    scheduler: str = "",
    reason: str = "",
    with_configuration: bool = False,
) -> dict:
    """The tags that say how a trial ended, with its one-line description (``mlflow.note.content``);
    ``reason``: the error of a failed trial or why one was interrupted."""
    if outcome == "stopped_early":
        note = stop_note(scheduler, epoch, planned, with_configuration)
    elif outcome == "finished":
        note = f"ran all {planned} epochs"
    elif outcome == "failed":
        note = f"failed at epoch {epoch} of {planned}: {reason}"
    else:
        note = f"interrupted at epoch {epoch} of {planned} ({reason})"
    tags = {OUTCOME: outcome, EPOCHS_PLANNED: planned, NOTE: note[:MAX_TAG]}
    if outcome == "stopped_early":
        tags[STOPPED_AT] = epoch
    if outcome != "finished":
        tags[STATUS_REASON] = reason or note  # the older tag, kept for readers of earlier sweeps
    return tags


def log_params(mlflow_client, run_id: str, params: Mapping[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), 100):
        mlflow_client.log_batch(run_id, params=items[i : i + 100])


def log_metrics(
    mlflow_client, run_id: str, metrics: Mapping[str, float], step: int, timestamp_ms: int | None = None
) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    items = [Metric(k[:MAX_KEY], float(v), now, step) for k, v in metrics.items()]
    for i in range(0, len(items), 1000):
        mlflow_client.log_batch(run_id, metrics=items[i : i + 1000])


def create_run(mlflow_client, experiment_id: str, tags: Mapping[str, Any], run_name: str):
    """``create_run`` with every tag value as a string: sqlite stores cast other values,
    the REST store of an ``mlflow server`` cannot send them."""
    tags = {k: str(v) for k, v in tags.items()}
    return mlflow_client.create_run(experiment_id, tags=tags, run_name=run_name)


def set_tags(mlflow_client, run_id: str, tags: Mapping[str, Any]) -> None:
    from mlflow.entities import RunTag

    items = [RunTag(k, str(v)[:MAX_TAG]) for k, v in tags.items()]
    mlflow_client.log_batch(run_id, tags=items)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def epoch_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """The per-epoch MLflow metrics of one trainer record (test metrics only when the selected
    epoch changed — their latest value is the final answer)."""
    out = {k: v for k, v in record.items() if k.startswith(EPOCH_PREFIXES) and _number(v)}
    if record.get("best/epoch") == record.get("epoch"):
        out.update({k: v for k, v in record.items() if k.startswith("test/") and _number(v)})
    return out


def model_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    return {k: v for k, v in record.items() if k.startswith("model/") and _number(v)}


# Where a trial ran, from its results: run tags, updated when a retry lands somewhere else.
PLACEMENT_TAGS = {
    "node_id": "mtsam.node_id",
    "placement/device": "mtsam.device",
    "placement/gpus": "mtsam.gpus",
    "placement/gpu_share": "mtsam.gpu_share",
    "placement/workers": "mtsam.workers",  # data-parallel trials (resources.workers > 1)
    "placement/nodes": "mtsam.nodes",
}


def placement_tags(record: Mapping[str, Any]) -> dict[str, str]:
    return {tag: str(record[key]) for key, tag in PLACEMENT_TAGS.items() if key in record}


def log_missing_epochs(
    mlflow_client, run_id: str, records: Mapping[int, Mapping[str, Any]], logged: set[int], has_model: bool
) -> bool:
    """Log the epochs of ``records`` (epoch → trainer record) that are not in ``logged`` (updated in
    place): Tune or the trial's checkpoint recorded them, but their MLflow update was still in the
    backlog of a driver killed meanwhile, and a restored Tune replays no result. The first record with
    model metrics also gives step 0 unless ``has_model``. Returns whether the run now has them."""
    for epoch in sorted(set(records) - logged):
        record = records[epoch]
        at = record.get("reported_at")
        stamp = int(at * 1000) if isinstance(at, (int, float)) else None
        if not has_model and model_metrics(record):
            log_metrics(mlflow_client, run_id, model_metrics(record), step=0, timestamp_ms=stamp)
            has_model = True
        log_metrics(mlflow_client, run_id, epoch_metrics(record), step=epoch, timestamp_ms=stamp)
        logged.add(epoch)
    return has_model


def logged_steps(mlflow_client, run_id: str, key: str = SENTINEL) -> set[int]:
    return {m.step for m in mlflow_client.get_metric_history(run_id, key)}


def _fmt_number(value: float) -> str:
    text = f"{value:.1e}".replace(".0e", "e").replace("e-0", "e-").replace("e+0", "e")
    return text


def run_name(config: Mapping[str, Any], suffix: str) -> str:
    """``tora-r32.32.4-fixed-lr1e-3-<suffix>`` from a trial's run config."""
    adapter = config["adapter"]
    kind = adapter["type"]
    if kind == "tora":
        part = "tora-r" + ".".join(str(r) for r in adapter["ranks"])
    elif kind in ("lora", "shared_lora"):
        part = f"{kind}-r{adapter['rank']}"
    else:
        part = "frozen"
    lr = _fmt_number(float(config["train"]["lr"]))
    return f"{part}-{config['weighting']['method']}-lr{lr}-{suffix}"


def git_commit(start: Path | None = None) -> str:
    """The checkout's commit, read from .git without running git ("unknown" outside a checkout)."""
    here = (start or Path(__file__)).resolve()
    for folder in [here, *here.parents]:
        git = folder / ".git"
        if git.is_file():  # worktree / submodule: "gitdir: <path>"
            text = git.read_text().strip()
            git = (folder / text.removeprefix("gitdir:").strip()).resolve()
        if not git.is_dir():
            continue
        try:
            head = (git / "HEAD").read_text().strip()
            if not head.startswith("ref:"):
                return head
            ref = head.removeprefix("ref:").strip()
            common = git / "commondir"
            root = (git / common.read_text().strip()).resolve() if common.is_file() else git
            for base in (git, root):
                if (base / ref).is_file():
                    return (base / ref).read_text().strip()
            packed = root / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split()[0]
        except OSError:
            pass
        return "unknown"
    return "unknown"


def trial_error(trial) -> str:
    """The one-line reason a Tune trial failed: its local error file first (the copy in storage may
    not be synced yet when the callback runs)."""
    text = None
    try:
        if trial.error_file and Path(trial.error_file).is_file():
            text = Path(trial.error_file).read_text()
        else:
            text = trial.get_error()
    except OSError:
        pass
    return error_reason(text)


def error_reason(text: str | None) -> str:
    """The last ``Type: message`` line of a Ray error trace (the exception that killed the trial).
    The type's own name is capitalised, as exception classes are: Ray's ``key: value`` lines about a
    dead actor (``pid: 6250``, ``ip: 10.0.0.5``) are not exceptions."""
    if not text:
        return "error (no details recorded)"
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        name = head.rsplit(".", 1)[-1]
        dotted_name = head.replace(".", "").replace("_", "").isalnum() and head[:1].isalpha()
        is_exception = ":" in line and dotted_name and name[:1].isupper()
        if is_exception and not line.startswith(("File ", "Failure #", "ray.exceptions.RayTaskError")):
            return line[:1000]
    return lines[-1][:1000] if lines else "error"


def close_children(
    mlflow_client, experiment_id: str, parent_run_id: str, known_trials: set[str] | None, reason: str
) -> int:
    """End every child run still RUNNING. A child whose trial Tune does not know (``known_trials``)
    was started just before a driver kill and never checkpointed by Tune; it becomes
    ``mtsam.role=orphan`` so analysis does not count it as a trial."""
    runs = mlflow_client.search_runs(
        [experiment_id], f"tags.`{PARENT}` = '{parent_run_id}'", max_results=5000
    )
    closed = 0
    for run in runs:
        tid = run.data.tags.get(TRIAL_ID)
        orphan = known_trials is not None and tid not in known_trials and run.data.tags.get(ROLE) == "trial"
        if orphan:
            set_tags(
                mlflow_client,
                run.info.run_id,
                {
                    ROLE: "orphan",
                    STATUS_REASON: "interrupted before Ray Tune recorded this trial; it was not resumed",
                },
            )
        if run.info.status == "RUNNING":
            if not orphan and run.data.tags.get(ROLE) == "trial":
                epoch = max(logged_steps(mlflow_client, run.info.run_id), default=0)
                planned = int(run.data.tags.get(EPOCHS_PLANNED, 0) or 0)
                set_tags(
                    mlflow_client, run.info.run_id, outcome_tags("interrupted", epoch, planned, reason=reason)
                )
            mlflow_client.set_terminated(run.info.run_id, status="KILLED")
            closed += 1
    return closed


def settle_trial_runs(
    mlflow_client, experiment_id: str, parent_run_id: str, rows: list[dict], planned: int, scheduler: str
) -> int:
    """After the sweep, make MLflow hold what Ray Tune holds. Epochs a trial's ``result.json`` has but
    its run lacks (their updates were in the backlog of a killed driver, or never got through to an
    unreachable store) are logged now. A trial Tune holds as ended whose run is still RUNNING (its end
    was in that backlog, and a restored Tune replays no events for it) ends now as the trial did,
    with the epochs its newest checkpoint adds. Returns how many runs were changed."""
    from .artifacts import log_metrics_jsonl, records_from_results, recovered_records

    by_trial = {r["trial_id"]: r for r in rows}
    runs = mlflow_client.search_runs(
        [experiment_id], f"tags.`{PARENT}` = '{parent_run_id}' and tags.`{ROLE}` = 'trial'", max_results=5000
    )
    settled = 0
    for run in runs:
        row = by_trial.get(run.data.tags.get(TRIAL_ID))
        if row is None:
            continue
        run_id, running = run.info.run_id, run.info.status == "RUNNING"
        records = (recovered_records if running else records_from_results)(row.get("path"))
        logged = logged_steps(mlflow_client, run_id)
        if not running and set(records) <= logged:
            continue
        has_model = run.data.metrics.get("model/trainable_params") is not None
        log_missing_epochs(mlflow_client, run_id, records, logged, has_model)
        if records:
            log_metrics_jsonl(mlflow_client, run_id, [records[e] for e in sorted(records)])
        settled += 1
        if not running:
            continue
        outcome, epoch = final_outcome(row["outcome"], int(row["epochs"] or 0), records, planned)
        tags = outcome_tags(outcome, epoch, planned, scheduler, row.get("error") or "")
        if row.get("optuna_trial") is not None:
            tags[OPTUNA_TRIAL] = row["optuna_trial"]
        set_tags(mlflow_client, run_id, tags)
        mlflow_client.set_terminated(run_id, status=OUTCOME_STATUS[outcome])
    return settled
