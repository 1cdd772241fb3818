"""Load a sweep from an MLflow tracking store, relying only on docs/TRACKING.md.

Parent run: tag ``mtsam.role=sweep`` (artifact ``baseline.json``); trials: its child runs
(``mlflow.parentRunId``); baseline runs: ``mtsam.role=baseline`` in the same experiment.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.delta import SPLITS
from analysis.errors import AnalysisError
from analysis.frames import TrialRecord, build_trials
from analysis.outcome import OUTCOME_TAG, PLANNED_TAG, STOPPED_AT_TAG
from analysis.params import parse_params
from analysis.sweep import Sweep

ROLE_TAG, TRIAL_ID_TAG, PARENT_TAG = "mtsam.role", "mtsam.trial_id", "mlflow.parentRunId"
BASELINE_ARTIFACT, TRIVIAL_ARTIFACT = "baseline.json", "trivial.json"
OUTCOME_TAGS = (OUTCOME_TAG, STOPPED_AT_TAG, PLANNED_TAG)
_PAGE = 1000


def check_tracking_uri(uri: str) -> None:
    """Fail fast, and without side effects, on a store that is not there.

    MLflow would silently create an empty sqlite file, or retry an unreachable server for minutes.
    """
    if not uri:
        raise AnalysisError(
            "tracking URI is empty; expected e.g. sqlite:///runs/mlflow.db or http://host:5000"
        )
    if uri.startswith("sqlite:"):
        path = uri.removeprefix("sqlite:").removeprefix("///")
        if path in ("", ":memory:") or not Path(path).is_file():
            raise AnalysisError(
                f"tracking URI {uri}: sqlite file '{path}' does not exist; expected an MLflow database"
            )
    elif uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5).close()
        except urllib.error.HTTPError:
            pass  # something answers; MLflow's own calls will tell what is wrong
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise AnalysisError(
                f"tracking URI {uri} is unreachable ({reason}); expected a running MLflow server"
            ) from err
    elif "://" not in uri or uri.startswith("file:"):
        path = uri.removeprefix("file://")
        if not Path(path).is_dir():
            raise AnalysisError(
                f"tracking URI {uri}: directory '{path}' does not exist; expected an MLflow store"
            )


def load_mlflow_sweep(
    tracking_uri: str,
    experiment: str | None = None,
    parent_run_id: str | None = None,
    split: str | None = None,
) -> Sweep:
    """Sweep of ``experiment`` (its latest parent run) or of the parent run ``parent_run_id``."""
    if not experiment and not parent_run_id:
        raise AnalysisError("give an experiment name or a parent run id")
    check_tracking_uri(tracking_uri)
    with quiet_mlflow():  # the import too: mlflow's own imports warn in a notebook
        from mlflow.exceptions import MlflowException  # lazy: mlflow import is ~2 s

    try:
        with quiet_mlflow():
            return _load(tracking_uri, experiment, parent_run_id, split)
    except MlflowException as err:
        raise AnalysisError(f"tracking URI {tracking_uri}: {err.message.splitlines()[0]}") from err
    except OSError as err:  # e.g. requests' ConnectionError mid-way
        raise AnalysisError(f"tracking URI {tracking_uri}: {err}") from err


def _load(uri: str, experiment: str | None, parent_run_id: str | None, split: str | None) -> Sweep:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    notes: list[str] = []
    if parent_run_id:
        parent = _get_run(client, parent_run_id, uri)
        exp = client.get_experiment(parent.info.experiment_id)
        if experiment and exp.name != experiment:
            raise AnalysisError(
                f"parent run {parent_run_id} belongs to experiment '{exp.name}', not '{experiment}'"
            )
    else:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            known = sorted(e.name for e in client.search_experiments(max_results=50))
            raise AnalysisError(
                f"experiment '{experiment}' not found at {uri}; expected one of: {', '.join(known) or 'none'}"
            )
        parents = _search(client, exp.experiment_id, f"tags.`{ROLE_TAG}` = 'sweep'")
        parent = max(parents, key=lambda r: r.info.start_time or 0) if parents else None
        if len(parents) > 1:
            notes.append(
                f"experiment has {len(parents)} sweep runs; using the latest ({parent.info.run_id}), "
                "pass a parent run id to choose another"
            )
    if parent is not None:
        runs = _search(client, exp.experiment_id, f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
        runs = [r for r in runs if r.data.tags.get(ROLE_TAG, "trial") == "trial"]
    else:
        runs = _search(client, exp.experiment_id, f"tags.`{ROLE_TAG}` = 'trial'")
        notes.append(f"no parent run (tag {ROLE_TAG}=sweep): using the experiment's {len(runs)} trial runs")
    runs.sort(key=lambda r: (r.info.start_time or 0, r.info.run_id))
    where = f"parent run {parent.info.run_id}" if parent is not None else f"experiment '{exp.name}'"
    if not runs:
        raise AnalysisError(
            f"sweep {where} at {uri} has no trial runs; expected child runs with tag {ROLE_TAG}=trial"
        )
    baseline = _read_baseline(client, parent.info.run_id) if parent is not None else None
    base_runs = _baseline_runs(client, exp.experiment_id, parent)
    base_frame = build_trials([_record(client, r) for r in base_runs])[0] if base_runs else pd.DataFrame()
    return Sweep.from_records(
        exp.name,
        f"mlflow:{uri}",
        [_record(client, r) for r in runs],
        baseline=baseline,
        split=split,
        parent_run_id=parent.info.run_id if parent is not None else None,
        tags=dict(parent.data.tags) if parent is not None else {},
        baseline_runs=base_frame,
        notes=tuple(notes),
        parent_metrics={**parent.data.metrics, **_trivial_metrics(client, parent)}
        if parent is not None
        else {},
    )


def _baseline_runs(client: Any, experiment_id: str, parent: Any) -> list[Any]:
    """The runs the parent's tag ``mtsam.baseline_runs`` names (they may live in an earlier sweep's
    experiment), else the experiment's ``mtsam.role=baseline`` runs."""
    from mlflow.exceptions import MlflowException

    ids = (parent.data.tags.get("mtsam.baseline_runs", "") if parent is not None else "").split(",")
    runs = []
    for run_id in (i.strip() for i in ids if i.strip()):
        with contextlib.suppress(MlflowException):  # a deleted run: the baseline.json still holds it
            runs.append(client.get_run(run_id))
    return runs or _search(client, experiment_id, f"tags.`{ROLE_TAG}` = 'baseline'")


def find_store(uri: str, start: str | Path | None = None) -> str:
    """A relative ``sqlite:///runs/mlflow.db`` resolved against ``start`` (default: the working
    directory) or, if not there, its nearest parent that has it; an absolute ``sqlite:////...``
    URI otherwise unchanged. Lets a notebook opened in analysis/notebooks/ find ``make demo``'s
    store in the repository root."""
    if not uri.startswith("sqlite:///") or uri.startswith("sqlite:////"):
        return uri
    rel = Path(uri.removeprefix("sqlite:///"))
    here = Path(start or Path.cwd()).absolute()
    for folder in (here, *here.parents):
        if (folder / rel).is_file():
            return f"sqlite:///{folder / rel}"
    return f"sqlite:///{here / rel}"  # check_tracking_uri then says where it looked


def latest_sweep_experiment(tracking_uri: str) -> str:
    """Name of the experiment holding the store's most recent sweep (what ``make demo`` just ran)."""
    check_tracking_uri(tracking_uri)
    with quiet_mlflow():
        return _latest_sweep_experiment(tracking_uri)


def _latest_sweep_experiment(tracking_uri: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments(max_results=1000)]
    runs = client.search_runs(
        experiments, f"tags.`{ROLE_TAG}` = 'sweep'", max_results=1, order_by=["attributes.start_time DESC"]
    )
    if not runs:
        raise AnalysisError(f"tracking URI {tracking_uri} holds no sweep (no run with {ROLE_TAG}=sweep)")
    return client.get_experiment(runs[0].info.experiment_id).name


def _get_run(client: Any, run_id: str, uri: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as err:
        raise AnalysisError(
            f"parent run '{run_id}' not found at {uri}; expected the run id of a sweep"
        ) from err


def _search(client: Any, experiment_id: str, filter_string: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=_PAGE, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.lstrip("-").isdigit() else None


def _record(client: Any, run: Any) -> TrialRecord:
    info, tags = run.info, run.data.tags
    meta = {
        "run_id": info.run_id,
        "trial_id": tags.get(TRIAL_ID_TAG) or info.run_name or info.run_id[:8],
        "run_name": info.run_name,
        "status": info.status,
        "status_reason": tags.get("mtsam.status_reason"),
        "adapter": tags.get("mtsam.adapter"),
        "weighting": tags.get("mtsam.weighting"),
        "task": tags.get("mtsam.task"),
        "config": _int(tags.get("mtsam.config")),
        "seed": _int(tags.get("mtsam.seed")),
        "device": tags.get("mtsam.device"),
        "start_time": info.start_time,
        "end_time": info.end_time,
        "outcome_tags": {k: v for k, v in tags.items() if k in OUTCOME_TAGS},
    }
    by_epoch: dict[int, dict[str, Any]] = {}
    for key in run.data.metrics:
        if key.startswith("model/"):
            continue  # logged once at step 0, not per epoch
        # ordered by step then timestamp: the later value of a re-logged step wins
        for m in sorted(client.get_metric_history(info.run_id, key), key=lambda m: (m.step, m.timestamp)):
            if m.step >= 1:
                by_epoch.setdefault(m.step, {"epoch": m.step})[key] = m.value
    return TrialRecord(meta, parse_params(run.data.params), dict(run.data.metrics), list(by_epoch.values()))


@contextlib.contextmanager
def quiet_mlflow() -> Iterator[None]:
    """No MLflow/alembic INFO lines ("Updating database tables") and no SQLAlchemy deprecation
    warnings from MLflow's store: in a notebook each would be a red stderr box."""
    import logging
    import warnings

    loggers = [logging.getLogger(n) for n in ("mlflow", "alembic")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", module="sqlalchemy")
            # tqdm.auto, imported by a library on the way, warns in a kernel without ipywidgets
            warnings.filterwarnings("ignore", message="IProgress not found")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def _quiet_downloads() -> Iterator[None]:
    # MLflow draws a tqdm bar on stderr even for one small file
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    old = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _read_json_artifact(client: Any, run_id: str, name: str) -> dict[str, Any] | None:
    if name not in {f.path for f in client.list_artifacts(run_id)}:
        return None
    with tempfile.TemporaryDirectory() as tmp, _quiet_downloads():
        path = client.download_artifacts(run_id, name, tmp)
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise AnalysisError(f"{name} of run {run_id} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise AnalysisError(f"{name} of run {run_id} is not a JSON object")
    return data


def _read_baseline(client: Any, run_id: str) -> dict[str, Any] | None:
    data = _read_json_artifact(client, run_id, BASELINE_ARTIFACT)
    return data if data and any(data.get(s) for s in SPLITS) else None  # an empty file = no baseline


def _trivial_metrics(client: Any, parent: Any) -> dict[str, float]:
    """``trivial/<split>/<task>/<metric>`` of the parent, from its metrics or else its artifact
    ``trivial.json`` (issue #16: ``{"val": {task: {metric: v}}, "test": {...}, "predictor": ...}``)."""
    metrics = {k: v for k, v in parent.data.metrics.items() if k.startswith("trivial/")}
    if metrics:
        return metrics
    data = _read_json_artifact(client, parent.info.run_id, TRIVIAL_ARTIFACT) or {}
    return {
        f"trivial/{split}/{task}/{metric}": float(value)
        for split in SPLITS
        for task, values in (data.get(split) or {}).items()
        if isinstance(values, dict)
        for metric, value in values.items()
        if isinstance(value, (int, float))
    }
