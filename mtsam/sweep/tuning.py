"""The Ray Tune pieces: searcher over the persistent Optuna study, scheduler, Tuner (fresh or restored)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ray import tune
from ray.tune.search import ConcurrencyLimiter

from .callback import MlflowTracker
from .console import Clock
from .plan import SweepPlan
from .progress import ProgressPrinter
from .sampler import SpaceSampler, paper_point
from .samplers import build_sampler, sampler_label  # noqa: F401 - sampler_label: re-exported
from .schedulers import (  # noqa: F401 - scheduler_label: re-exported
    POPULATION,
    PopulationSearch,
    build_scheduler,
    decision_epochs,
    mutables,
    scheduler_label,
    scheduler_name,
)
from .searcher import StudySearcher
from .state import SweepState
from .trainable import run_trial
from .workers import DRIVER_CPU, check_fits


def build_searcher(plan: SweepPlan):
    """The sweep's Optuna searcher, at most ``max_concurrent`` trials at a time; under PBT / PB2
    wrapped so that Tune accepts it (``PopulationSearch``)."""
    search = plan.config.search
    point = paper_point(plan.config.space, plan.base) if search.paper_point else {}
    searcher = StudySearcher(
        SpaceSampler(plan.config.space, plan.base),
        study_name=plan.name,
        study_path=plan.study_path,
        objectives=plan.objectives,
        epochs=plan.base["train"]["epochs"],
        sampler=build_sampler(plan),
        first_point=point,
        seeds=search.seeds,
    )
    import ray

    # several workers per trial: at most as many trials as the cluster holds (mtsam.sweep.workers)
    at_once = check_fits(plan, ray.cluster_resources()) if ray.is_initialized() else search.max_concurrent
    limited = ConcurrencyLimiter(searcher, max_concurrent=at_once)
    return PopulationSearch(limited) if scheduler_name(plan) in POPULATION else limited


def trainable(plan: SweepPlan, trial_base: dict):
    res = plan.config.resources
    fn = tune.with_parameters(
        run_trial,
        trial_base=trial_base,
        sync_epochs=decision_epochs(plan),
        cap_gpu_memory=res.gpu_memory == "share",
        gpu_memory_gb=res.gpu_memory_gb,
        cost=plan.config.search.cost if plan.pareto else None,
        # PBT / PB2 change these while a trial trains: report the values each epoch trained with
        report_params=[m.path for m in mutables(plan)] if scheduler_name(plan) in POPULATION else [],
        workers=res.workers,
        worker_cpu=res.cpu,
        worker_gpu=res.gpu,
    )
    if res.workers > 1:  # the workers are Ray Train's placement group; the trial only relays
        return tune.with_resources(fn, {"cpu": DRIVER_CPU, "gpu": 0})
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
            seeds=plan.config.search.seeds,
        ),
        ProgressPrinter(clock, trial_base, plan.tune_trials, epochs, plan.metric, label),
        *result_loggers(plan.config.tensorboard),
    ]
    single = not plan.pareto
    return tune.Tuner(
        fn,
        tune_config=tune.TuneConfig(
            search_alg=build_searcher(plan),
            scheduler=build_scheduler(plan),
            num_samples=plan.tune_trials,
            metric=plan.metric if single else None,
            mode=plan.mode if single else None,
            # one warm process per slot: torch and mtsam import once; not with Ray Train workers:
            # ending the trial's process is what ends its Train run when Tune stops it
            reuse_actors=plan.config.resources.workers == 1,
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
