"""Run (or resume) a sweep: MLflow parent run, baselines, Ray Tune + Optuna, final report.

plan = make_plan(*load_sweep_config("tune/configs/quickstart.yaml"))
result = run_sweep(plan)            # or run_sweep(plan, resume=True) after an interruption
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from mtsam.errors import ConfigError, MTSAMError

from . import baselines as bl
from . import tracking as tr
from . import trivial_ref
from .console import Clock, say
from .driver_lock import DriverLock
from .plan import SweepPlan
from .state import SweepState, check_fresh, check_resumable, write_config


@dataclass
class SweepResult:
    name: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    exp_path: str
    study_location: str
    # one per trial, best first (see report.trial_rows); with search.seeds > 1 one per configuration
    # (mean over its seeds, seeds.config_rows), the seeds' own rows in ``trials``
    rows: list[dict] = field(default_factory=list)
    pareto: list[dict] = field(default_factory=list)
    best_adapter: str | None = None
    baseline: dict | None = None
    trivial: dict | None = None  # trivial.json: constant predictors scored on val and test
    trials: list[dict] = field(default_factory=list)  # one per Tune trial (= rows without seeds)


def preflight(
    plan: SweepPlan, resume: bool, check_gpus: bool = True, fresh: bool = True
) -> SweepState | None:
    """Every check that must pass before anything is created (also run by --dry-run, which may
    describe a GPU sweep on a machine without GPUs: ``check_gpus=False``, and an existing sweep:
    ``fresh=False``)."""
    creatable = [] if "://" in plan.config.storage else [Path(plan.config.storage)]
    for path in creatable:
        check_writable(path, "storage")
    tr.check_tracking_uri(plan.tracking_uri, creatable=[*creatable, plan.state_dir])
    if check_gpus:
        check_local_gpus(plan)
    if resume:
        return check_resumable(plan)
    if fresh:
        check_fresh(plan)
    return None


def check_writable(path: Path, field: str) -> None:
    """The nearest existing ancestor of ``path`` must be a writable directory."""
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{field}: {path} is not writable ({probe} is not a writable directory)")


def check_local_gpus(plan: SweepPlan) -> None:
    """A local Ray sees this machine's GPUs only; asking for more can never schedule a trial."""
    res = plan.config.resources
    gpus = res.gpu
    if gpus <= 0 or (plan.config.ray.address not in (None, "local")):
        return
    import torch

    found = torch.cuda.device_count()
    if found < min(gpus, 1) * res.workers:
        per = f"{gpus:g} GPU per trial" if res.workers == 1 else f"{res.workers} workers × {gpus:g} GPU"
        raise ConfigError(
            f"resources.gpu: {per} requested but this machine has {found} GPUs "
            "(set resources.gpu=0, or --address a Ray cluster with GPU workers)"
        )


def check_cluster_gpus(plan: SweepPlan) -> None:
    import ray

    from .workers import check_fits

    gpus = plan.config.resources.gpu
    available = ray.cluster_resources().get("GPU", 0)
    if gpus > 0 and available < min(gpus, 1):
        raise ConfigError(
            f"resources.gpu: {gpus} GPU per trial requested but the Ray cluster has {available} GPUs"
        )
    check_fits(plan, ray.cluster_resources())


def _quiet() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault(
        "RAY_AIR_NEW_OUTPUT", "0"
    )  # with verbose=0: no Tune tables (ProgressPrinter instead)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # Fail fast on an unreachable tracking server: the tracker keeps its own ordered backlog.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")  # one line per error (ProgressPrinter)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")
    warnings.filterwarnings("ignore", module="optuna")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("ray", "ray.tune", "ray.train", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import optuna  # its first logger use resets its level to INFO, so set it through its own API

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # no "A new study created" between our lines


def start_ray(plan: SweepPlan, address: str | None) -> bool:
    """Connect to ``address`` or start a local Ray; True when this process started it."""
    import ray

    if ray.is_initialized():
        return False
    # Ray's own logs at ERROR, in workers too: no "checkpoint created" / "restored" line per trial
    # and epoch, no notice that token authentication is on (it stays on: Ray's local default).
    common = {
        "logging_level": logging.ERROR,
        "log_to_driver": True,
        "logging_config": ray.LoggingConfig(log_level="ERROR"),
    }
    if address:
        ray.init(address=address, **common)
        return True
    # "local": a new instance even when RAY_ADDRESS or /tmp/ray/ray_current_cluster names another one
    ray.init(address="local", num_cpus=plan.config.ray.num_cpus, include_dashboard=False, **common)
    return True


def _baseline(plan: SweepPlan, client, state: SweepState, clock: Clock) -> tuple[dict | None, dict, str]:
    """(baseline for the trials' configs, content of baseline.json, what the parent's note says)."""
    from .parent import baseline_text, log_baseline

    if plan.baseline_mode == "none":
        say(clock, f"baselines: none (objective {plan.metric})")
        log_baseline(client, plan, state.parent_run_id, baseline_text(plan))
        return None, {}, baseline_text(plan)
    if plan.baseline_mode == "inline":
        say(clock, "baselines: given in the config (base.baseline)")
        from mtsam.evaluation import directions
        from mtsam.tasks import build_tasks

        tasks = build_tasks(_channels(plan.base))
        base = plan.base["baseline"]
        log_baseline(client, plan, state.parent_run_id, baseline_text(plan))
        return base, {**base, "directions": directions(tasks)}, baseline_text(plan)
    adapter = plan.config.baselines.adapter
    res = plan.config.resources
    data, key, run_ids = bl.resolve(
        client,
        state.experiment_id,
        plan.base,
        adapter.model_dump(mode="json") if adapter else None,
        plan.name,
        res.cpu,
        res.gpu,
        lambda text: say(clock, text),
        parent_run_id=state.parent_run_id,
        seeds=plan.config.search.seeds,
    )
    tr.set_tags(client, state.parent_run_id, {bl.KEY_TAG: key, "mtsam.baseline_runs": ",".join(run_ids)})
    text = baseline_text(plan, key, run_ids)
    log_baseline(client, plan, state.parent_run_id, text, key)
    summary = "  ".join(
        f"{t} " + " ".join(f"{m} {v:.4g}" for m, v in list(data["test"][t].items())[:2]) for t in data["test"]
    )
    say(clock, f"baselines (test): {summary}")
    return {"val": data["val"], "test": data["test"]}, data, text


def _channels(base: dict) -> dict[str, int]:
    from mtsam.config import validate_config

    return validate_config(base).data.channels()


def run_sweep(plan: SweepPlan, resume: bool = False, address: str | None = None) -> SweepResult:
    """Run the whole sweep (``preflight`` first); the parent run ends FINISHED, FAILED or KILLED."""
    _quiet()
    state = preflight(plan, resume)
    lock = DriverLock(plan.state_dir, plan.name)
    try:
        if plan.state_dir.is_dir():
            lock.acquire()  # before Ray starts: a second driver on a running sweep fails at once
        return _run(plan, resume, address, state, lock)
    finally:
        lock.release()


def _run(plan: SweepPlan, resume: bool, address: str | None, state, lock: DriverLock) -> SweepResult:
    from . import report
    from .config_runs import settle_config_runs
    from .seeds import config_rows
    from .study import tidy_study
    from .tuning import build_tuner, scheduler_label

    clock = Clock()
    started = start_ray(plan, address or plan.config.ray.address)
    try:
        check_cluster_gpus(plan)  # before anything is written: a sweep that cannot schedule leaves nothing
        plan.state_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire()  # a fresh sweep's directory exists only now
    except ConfigError:
        if started:
            import ray

            ray.shutdown()
        raise
    if lock.clear_stale_journal_lock(plan.study_path):
        say(clock, f"removed the Optuna journal's lock file left by a killed driver ({plan.study_path})")
    if state is None:
        write_config(plan)
    from .parent import open_parent

    client = tr.client(plan.tracking_uri)
    state = open_parent(plan, client, state, tr.git_commit())
    say(
        clock,
        f"sweep '{plan.name}': MLflow {plan.tracking_uri} (experiment '{plan.name}', "
        f"parent run {state.parent_run_id})",
    )
    status = "FAILED"
    try:
        baseline, baseline_json, baseline_note = _baseline(plan, client, state, clock)
        if baseline_json:
            client.log_dict(state.parent_run_id, baseline_json, "baseline.json")
        trivial = trivial_ref.log_trivial(client, state.parent_run_id, plan.base, lambda t: say(clock, t))
        trial_base = plan.trial_config({}, baseline)
        tuner = build_tuner(plan, trial_base, state, clock, resume)
        say(
            clock,
            f"{'resuming' if resume else 'starting'} {plan.count_text()} "
            f"({_at_once(plan)}) → {plan.exp_path}",
        )
        grid = tuner.fit()
        if grid.num_terminated + grid.num_errors < max(len(grid), plan.tune_trials):
            # Ctrl-C / SIGUSR1: Tune saved its state and returned early
            raise KeyboardInterrupt
        from . import parent
        from .study import trial_numbers

        rows = report.trial_rows(grid, plan, trial_base, trial_numbers(plan.study_path, plan.name))
        settled = tr.settle_trial_runs(
            client,
            state.experiment_id,
            state.parent_run_id,
            rows,
            plan.base["train"]["epochs"],
            scheduler_label(plan),
        )
        if settled:
            say(clock, f"MLflow: {settled} trial runs brought up to date with Ray Tune's results")
        settle_config_runs(client, state.experiment_id, state.parent_run_id, plan)
        tr.close_children(
            client,
            state.experiment_id,
            state.parent_run_id,
            {r["trial_id"] for r in rows},
            "the sweep ended before this trial finished",
        )
        result = SweepResult(
            plan.name,
            plan.tracking_uri,
            state.experiment_id,
            state.parent_run_id,
            plan.exp_path,
            plan.study_location,
            rows=config_rows(rows, plan.mode) if plan.config.search.seeds > 1 else rows,
            baseline=baseline_json or None,
            trivial=trivial,
            trials=rows,
        )
        if rows and all(r["status"] == "failed" for r in rows):
            raise MTSAMError(f"all {len(rows)} trials failed; the first: {_first_error(grid)}")
        rows = result.rows
        if plan.pareto:
            result.pareto = report.pareto_front(rows, plan)
        result.best_adapter = report.save_best(rows, plan, client, state.parent_run_id)
        parent.log_summary(client, state.parent_run_id, rows, result.pareto, result.best_adapter)
        parent.log_result(client, plan, state.parent_run_id, rows, baseline_note)
        if plan.config.log_adapters == "top_k":
            report.log_top_adapters(rows, plan, client)
        tidy_study(plan.study_path, plan.name)
        status = "FINISHED"
        state.status = "finished"
        state.save(plan.state_dir)
        return result
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        try:
            if status != "FINISHED":  # --resume reopens these runs
                tr.close_children(
                    client,
                    state.experiment_id,
                    state.parent_run_id,
                    None,
                    f"sweep driver stopped ({status.lower()}); continue with --resume",
                )
            client.set_terminated(state.parent_run_id, status=status)
        finally:
            if started:
                import ray

                ray.shutdown()


def _at_once(plan: SweepPlan) -> str:
    import ray

    from .workers import check_fits

    wanted, res = plan.config.search.max_concurrent, plan.config.resources
    fit = check_fits(plan, ray.cluster_resources())
    if res.workers == 1:
        return f"{wanted} at a time"
    lowered = f"; max_concurrent {wanted} lowered to what the cluster holds" if fit < wanted else ""
    return f"{fit} at a time, {res.workers} workers each{lowered}"


def _first_error(grid) -> str:
    errors = grid.errors
    return tr.error_reason(str(errors[0])) if errors else "unknown error"
