"""The Ray Tune pieces: searcher over the persistent Optuna study, scheduler, Tuner (fresh or restored)."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter

from .callback import MlflowTracker
from .console import Clock
from .plan import SweepPlan
from .progress import ProgressPrinter
from .sampler import SpaceSampler, paper_point
from .searcher import StudySearcher
from .state import SweepState
from .trainable import run_trial


def sampler_label(plan: SweepPlan) -> str:
    return "NSGA-II" if plan.pareto else "TPE"


def build_searcher(plan: SweepPlan) -> ConcurrencyLimiter:
    import optuna

    search = plan.config.search
    n = search.num_samples
    if plan.pareto:
        sampler = optuna.samplers.NSGAIISampler(seed=search.seed, population_size=max(4, min(50, n // 2)))
    else:
        sampler = optuna.samplers.TPESampler(seed=search.seed, n_startup_trials=max(3, min(10, n // 3)))
    point = paper_point(plan.config.space, plan.base) if search.paper_point else {}
    searcher = StudySearcher(
        SpaceSampler(plan.config.space, plan.base),
        study_name=plan.name,
        study_path=plan.study_path,
        objectives=plan.objectives,
        epochs=plan.base["train"]["epochs"],
        sampler=sampler,
        first_point=point,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=search.max_concurrent)


def scheduler_label(plan: SweepPlan) -> str:
    return "ASHA" if plan.config.scheduler.type == "asha" and not plan.pareto else "FIFO"


def build_scheduler(plan: SweepPlan):
    s = plan.config.scheduler
    if scheduler_label(plan) == "FIFO":  # multi-objective: schedulers need one scalar metric
        return FIFOScheduler()
    # time_attr "epoch" (not training_iteration): it stays right across restores from checkpoints
    return ASHAScheduler(
        time_attr="epoch",
        max_t=plan.base["train"]["epochs"],
        grace_period=s.grace_period,
        reduction_factor=s.reduction_factor,
    )


def decision_epochs(plan: SweepPlan) -> frozenset[int]:
    """Epochs after which the scheduler may stop a trial: ASHA decides at the first report at or past
    each rung (grace · rfᵏ below max_t). Trials wait for the driver's answer there and run ahead
    everywhere else (``reporting``)."""
    if scheduler_label(plan) == "FIFO":
        return frozenset()
    s, max_t = plan.config.scheduler, plan.base["train"]["epochs"]
    rungs, milestone = set(), s.grace_period
    while milestone < max_t:
        rungs.add(math.ceil(milestone))
        milestone *= s.reduction_factor
    return frozenset(rungs)


def trainable(plan: SweepPlan, trial_base: dict):
    res = plan.config.resources
    fn = tune.with_parameters(
        run_trial,
        trial_base=trial_base,
        sync_epochs=decision_epochs(plan),
        cap_gpu_memory=res.gpu_memory == "share",
    )
    return tune.with_resources(fn, {"cpu": res.cpu, "gpu": res.gpu})


def refill_checkpoints(exp_path: str) -> list[Path]:
    """Before a restore: give back every checkpoint folder a trial's newer checkpoint replaced.

    Tune deletes a trial's older checkpoint folder as soon as a newer one registers but saves its
    own state, which names the folder to restore from, a moment later; a driver killed in between
    leaves a state pointing at a deleted folder, and that trial could never be restored. Our
    checkpoints say which epoch they hold, so the missing folder gets the newest one's files (hard
    links) and the trial resumes from there.
    Local storage only (a cloud URI has no such folders here). Returns the folders created."""
    if "://" in exp_path:
        return []
    created = []
    for trial_dir in Path(exp_path).glob("trial_*"):
        found = sorted(p for p in trial_dir.glob("checkpoint_*") if p.name[11:].isdigit())
        if not found:
            continue
        newest = found[-1]
        for index in range(int(newest.name[11:])):
            missing = trial_dir / f"checkpoint_{index:06d}"
            if not missing.exists():
                shutil.copytree(newest, missing, copy_function=os.link)
                created.append(missing)
    return created


def trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"  # short and stable (Ray's default embeds every parameter)


def result_loggers(tensorboard: bool) -> list[tune.Callback]:
    """Tune's per-trial result files: result.json and progress.csv, plus TensorBoard events on request."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    return [JsonLoggerCallback(), CSVLoggerCallback(), *([TBXLoggerCallback()] if tensorboard else [])]


def build_tuner(
    plan: SweepPlan, trial_base: dict, state: SweepState, clock: Clock, resume: bool
) -> tune.Tuner:
    fn = trainable(plan, trial_base)
    # Tune's CSV and JSON results are added explicitly below (analysis reads result.json); its
    # automatic TensorBoard logger cost the driver ~30 ms per result, so it comes only on request.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    if resume and tune.Tuner.can_restore(plan.exp_path):
        refill_checkpoints(plan.exp_path)
        # callbacks, searcher (with its Optuna study) and scheduler come back from Tune's state
        return tune.Tuner.restore(plan.exp_path, trainable=fn, resume_errored=True)
    label = scheduler_label(plan)
    epochs = plan.base["train"]["epochs"]
    callbacks = [
        MlflowTracker(
            plan.tracking_uri,
            state.experiment_id,
            state.parent_run_id,
            trial_base,
            plan.name,
            epochs,
            label,
            study_path=str(plan.study_path),
            log_adapters=plan.config.log_adapters,
        ),
        ProgressPrinter(clock, trial_base, plan.config.search.num_samples, epochs, plan.metric, label),
        *result_loggers(plan.config.tensorboard),
    ]
    single = not plan.pareto
    return tune.Tuner(
        fn,
        tune_config=tune.TuneConfig(
            search_alg=build_searcher(plan),
            scheduler=build_scheduler(plan),
            num_samples=plan.config.search.num_samples,
            metric=plan.metric if single else None,
            mode=plan.mode if single else None,
            reuse_actors=True,  # one warm process per slot: torch and mtsam import once
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=plan.name,
            storage_path=plan.config.storage,
            callbacks=callbacks,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=plan.config.keep_checkpoints),
            failure_config=tune.FailureConfig(max_failures=plan.config.max_failures),
            verbose=0,
        ),
    )
