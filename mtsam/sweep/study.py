"""The sweep's Optuna study: which file holds it, how to open it, and tidying it after a run.

New sweeps keep the study in an append-only journal file (``optuna.journal``). The driver asks the
study for every new trial's values and tells it every result, mostly while a trial waits for the
driver's answer. On a 2-core machine a new trial's values took 17 ms with the journal against 46 ms
with sqlite (one transaction per suggested value), a finished trial 2.7 against 9.8 ms. A journal
file is also Optuna's documented choice for NFS, where sqlite's locks are not safe. A sweep
started by an earlier version keeps its sqlite ``optuna.db``, so it still resumes. Both open in
``optuna-dashboard`` (a journal by its path, sqlite by its URL).

Each Optuna trial names its Ray trial(s) and MLflow run(s) in user attrs; the helpers at the end
read and set those links (the searcher, the MLflow tracker and the scheduler wrapper use them).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

STUDY_JOURNAL, LEGACY_STUDY = "optuna.journal", "optuna.db"
# user attrs: the Ray trial and MLflow run of an Optuna trial; with search.seeds > 1 its seeds' ids
# (Ray trial id → seed index) and their runs, while MLFLOW_RUN_ID then names the configuration run
RAY_TRIAL_ID, MLFLOW_RUN_ID = "ray_trial_id", "mlflow_run_id"
SEED_TRIALS, MLFLOW_SEED_RUNS = "seed_trials", "mlflow_seed_runs"


def study_file(state_dir: Path) -> Path:
    legacy = state_dir / LEGACY_STUDY
    return legacy if legacy.is_file() else state_dir / STUDY_JOURNAL


def dashboard_location(path: Path) -> str:
    """What ``optuna-dashboard`` takes for this study file."""
    return f"sqlite:///{path}" if path.suffix == ".db" else str(path)


def study_storage(path: Path):
    """The Optuna storage of a study file: a journal, or sqlite for a ``.db`` file."""
    import optuna

    if path.suffix == ".db":
        # sqlite waits on a lock instead of failing when optuna-dashboard reads the study meanwhile
        url = dashboard_location(path)
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 30}})
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def tidy_study(path: Path, name: str) -> int:
    """Mark study trials left RUNNING as FAIL: asked by a driver that was killed before Ray Tune
    recorded the trial, so no trial will ever tell them (user attr ``mtsam_note`` says so).
    Returns how many."""
    import optuna
    from optuna.trial import TrialState

    storage = study_storage(path)
    study = optuna.load_study(study_name=name, storage=storage)
    dangling = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in dangling:
        note = "asked by a sweep driver that was stopped before Ray Tune recorded this trial; never run"
        storage.set_trial_user_attr(trial._trial_id, "mtsam_note", note)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    return len(dangling)


def link_mlflow_run(storage, name: str, ray_trial_id: str, run_id: str) -> int | None:
    """Link the Optuna trial of ``ray_trial_id`` to its MLflow run (while it is still running: a
    finished trial cannot change); returns its Optuna number, or None when there is none."""
    import optuna

    study = optuna.load_study(study_name=name, storage=storage)
    for frozen in study.get_trials(deepcopy=False):
        if ray_trial_id in _ray_ids(frozen):
            if frozen.user_attrs.get(SEED_TRIALS):  # a seed (link_config_run links the configuration)
                runs = {**(frozen.user_attrs.get(MLFLOW_SEED_RUNS) or {}), ray_trial_id: run_id}
                _set_attr(storage, frozen, MLFLOW_SEED_RUNS, runs)
            else:
                _set_attr(storage, frozen, MLFLOW_RUN_ID, run_id)
            return frozen.number
    return None


def _set_attr(storage, frozen, key: str, value) -> None:
    """A user attr of a trial still running (a finished trial cannot change)."""
    from optuna.exceptions import UpdateFinishedTrialError

    if frozen.user_attrs.get(key) != value and not frozen.state.is_finished():
        with contextlib.suppress(UpdateFinishedTrialError):  # told meanwhile
            storage.set_trial_user_attr(frozen._trial_id, key, value)


def link_config_run(storage, name: str, number: int, run_id: str) -> None:
    """Link a seeded configuration's Optuna trial to its MLflow configuration run."""
    import optuna

    frozen = optuna.load_study(study_name=name, storage=storage).trials[number]
    _set_attr(storage, frozen, MLFLOW_RUN_ID, run_id)


def trial_numbers(path: Path, name: str) -> dict[str, int]:
    """Ray trial id → Optuna trial number, from the study."""
    import optuna

    study = optuna.load_study(study_name=name, storage=study_storage(path))
    return {ray_id: t.number for t in study.get_trials(deepcopy=False) for ray_id in _ray_ids(t)}


def ended_trials(path: Path, name: str) -> set[str]:
    """Ray trial ids whose Optuna trial ended COMPLETE or PRUNED (not FAIL: an errored trial may be
    retried), from the study file; empty when there is no study yet."""
    import optuna
    from optuna.trial import TrialState

    if not Path(path).is_file():
        return set()
    try:
        study = optuna.load_study(study_name=name, storage=study_storage(Path(path)))
    except KeyError:  # the file holds no study of that name (yet)
        return set()
    ended = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    return {ray_id for t in ended for ray_id in _ray_ids(t)}


def _ray_ids(frozen) -> list[str]:
    """The Ray trial ids of an Optuna trial: its seeds', or its one trial's."""
    seeds = frozen.user_attrs.get(SEED_TRIALS)
    if seeds:
        return list(seeds)
    return [frozen.user_attrs[RAY_TRIAL_ID]] if RAY_TRIAL_ID in frozen.user_attrs else []
