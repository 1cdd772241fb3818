"""The Ray Tune scheduler a sweep names (``scheduler.type``), and the combinations it refuses.

- ``asha`` (default): asynchronous successive halving; in a Pareto sweep it is ``mo_asha``
  (``MultiObjectiveASHA``, ours: Ray's schedulers compare one scalar).
- ``hyperband``: Ray's synchronous HyperBand (brackets of η-fold halving; pauses trials and resumes
  them from their checkpoints). ``median``: the median stopping rule (stops a trial whose best
  result so far is below the median of the others' running averages at the same epoch; decides
  from ``grace_period`` on once 3 trials have results there).
- ``pbt`` / ``pb2``: Population-Based Training (random explore) / PB2 (GP-bandit explore, Ray's
  implementation on scikit-learn). Every ``perturbation_interval`` epochs a trial in the bottom
  quarter takes the checkpoint of one in the top quarter and continues with that trial's config,
  its lr and weighting hyperparameters (method hyperparameters, per-task weights) mutated. The
  architecture (adapter, ranks, weighting method) follows the checkpoint and never mutates.
  Ray refuses searchers under PBT (they cannot follow a config that changes mid-trial); here
  Optuna still draws the first population (``random`` or ``qmc``) and keeps the trials' record
  (``PopulationSearch`` hands the searcher to Tune as a plain search algorithm). What a trial
  really trained with at each epoch is in MLflow as ``param/<name>`` metrics at step = epoch.
- ``fifo``: every trial runs its whole budget.

A scheduler's stop ends the trial PRUNED in Optuna and FINISHED + ``mtsam.outcome=stopped_early``
in MLflow; PBT never stops a trial (it only replaces its weights and config), so its trials end
COMPLETE / finished. Every scheduler comes wrapped in ``KeepsStudyEnds``: a trial the study
ended stays ended across ``--resume``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler
from ray.tune.schedulers.pb2 import PB2
from ray.tune.search import SearchAlgorithm, SearchGenerator

from mtsam.errors import ConfigError

from .mo_asha import MultiObjectiveASHA, rung_epochs
from .params import param_name
from .sampler import flatten, nest, space_params

LABELS = {
    "asha": "ASHA",
    "mo_asha": "MO-ASHA",
    "hyperband": "HyperBand",
    "median": "MedianStopping",
    "pbt": "PBT",
    "pb2": "PB2",
    "fifo": "FIFO",
}
SINGLE_ONLY = ("hyperband", "median", "pbt", "pb2")
POPULATION = ("pbt", "pb2")


def scheduler_name(plan) -> str:
    name = plan.config.scheduler.type
    return "mo_asha" if name == "asha" and plan.pareto else name


def scheduler_label(plan) -> str:
    return LABELS[scheduler_name(plan)]


@dataclass(frozen=True)
class Mutable:
    """One hyperparameter PBT / PB2 may change during training (a numeric range of the space)."""

    path: str  # the space path, e.g. "train/lr", "weighting/fixed/weights/depth"
    low: float
    high: float
    log: bool
    integer: bool
    conditional: bool  # present only in some trials (a sampled weighting method's hyperparameter)


def mutables(plan) -> list[Mutable]:
    """lr and the weighting hyperparameters (per-task weights included) of the space's numeric ranges."""
    params = space_params(plan.config.space, plan.base)
    sampled = {p.name for p in params}
    out = []
    for p in params:
        wanted = p.name == "train/lr" or (p.name.startswith("weighting/") and p.name != "weighting/method")
        if wanted and not p.dist.is_choice:
            d = p.dist
            conditional = p.when is not None and p.when[0] in sampled
            out.append(Mutable(p.name, d.low, d.high, d.log, d.type == "int", conditional))
    return out


class Explore:
    """PBT's explore step (picklable): each mutable value present in the config is resampled from
    its range with probability 1/4, else multiplied by 0.8 or 1.2, and clipped to the range."""

    def __init__(self, params: list[Mutable], seed: int) -> None:
        self.params = params
        self.rng = random.Random(seed)

    def __call__(self, config: dict) -> dict:
        flat = flatten(config)
        for p in self.params:
            if p.path not in flat:
                continue  # another weighting method's hyperparameter
            if self.rng.random() < 0.25:
                if p.log:
                    value = math.exp(self.rng.uniform(math.log(p.low), math.log(p.high)))
                else:
                    value = self.rng.uniform(p.low, p.high)
            else:
                value = float(flat[p.path]) * self.rng.choice((0.8, 1.2))
            value = min(max(value, p.low), p.high)
            flat[p.path] = int(round(value)) if p.integer else value
        return nest(flat)


class PopulationSearch(SearchAlgorithm):
    """The sweep's searcher handed to Tune as a plain search algorithm, so PBT / PB2 accept it:
    Optuna draws the first population and records every trial's epochs and end (PRUNED /
    COMPLETE / FAIL) as under any scheduler. Everything is delegated to Tune's own wrapper."""

    def __init__(self, searcher) -> None:
        self.inner = SearchGenerator(searcher)

    def __getattr__(self, name):  # anything not defined here (Tune's private helpers included)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def metric(self):
        return self.inner.metric

    @property
    def total_samples(self):
        return self.inner.total_samples

    def set_search_properties(self, metric, mode, config, **spec):
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def add_configurations(self, experiments):
        return self.inner.add_configurations(experiments)

    def next_trial(self):
        return self.inner.next_trial()

    def on_trial_result(self, trial_id, result):
        return self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id, result=None, error=False):
        return self.inner.on_trial_complete(trial_id, result=result, error=error)

    def is_finished(self):
        return self.inner.is_finished()

    def set_finished(self):
        return self.inner.set_finished()

    def has_checkpoint(self, dirpath):
        return self.inner.has_checkpoint(dirpath)

    def save_to_dir(self, dirpath, session_str):
        return self.inner.save_to_dir(dirpath, session_str)

    def restore_from_dir(self, dirpath):
        return self.inner.restore_from_dir(dirpath)


class _LeavesLastEpoch:
    """Population schedulers that leave a trial's last epoch alone: exploiting there would restart a
    trial that has nothing left to train (Ray's PBT and PB2 know no budget)."""

    def __init__(self, max_t: int, **kwargs) -> None:
        super().__init__(time_attr="epoch", quantile_fraction=0.25, log_config=False, **kwargs)
        self.max_t = max_t

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get("epoch", 0) >= self.max_t:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


class BudgetedPBT(_LeavesLastEpoch, PopulationBasedTraining):
    """PBT within the trial budget."""


class BudgetedPB2(_LeavesLastEpoch, PB2):
    """PB2 (GP-bandit explore) within the trial budget."""


# Set on a Ray trial the wrapper stopped because another seed of its configuration was stopped.
WITH_CONFIGURATION = "mtsam_stopped_with_configuration"


def stopped_with_configuration(trial) -> bool:
    """Did the wrapper stop this trial because another seed of its configuration was stopped?"""
    return bool(getattr(trial, WITH_CONFIGURATION, False))


class KeepsStudyEnds:
    """Any scheduler above, which after a restore first ends the trials the Optuna study ended.

    The searcher tells the study at once when the scheduler stops a trial (or it ran its budget);
    Tune saves its own state, which says which trials ended, only every few seconds. A driver
    killed in between leaves a trial PRUNED in the study but unfinished in Tune's state, and
    ``--resume`` would train it on from its last checkpoint: epochs spent on a stopped trial, and
    MLflow saying "finished" where Optuna says PRUNED. So on the first scheduling decision after a
    restore those trials are stopped as Tune stops any (the searcher leaves a trial it told
    already; the tracker ends its run as stopped early at its last epoch). A FAIL in the study is
    left to Tune's ``resume_errored``. Everything else is the wrapped scheduler's."""

    def __init__(self, inner, study_path: Path, study_name: str, epochs: int = 0) -> None:
        self.inner = inner
        self.study_path, self.study_name = str(study_path), study_name
        self.epochs = epochs
        self.pruned: set[int] = set()  # search.seeds: configurations one of whose seeds was stopped
        self._restored = False

    def __getattr__(self, name):  # the wrapped scheduler's API (Tune's private helpers included)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({"epochs": 0, "pruned": set(), **state})  # a sweep of an older version
        self._restored = True  # Tune restores the scheduler from its pickle (tuner.pkl)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        """A trial at its last epoch is never paused: it is done. (Ray's synchronous HyperBand
        pauses it there while its bracket waits for the others, then never resumes or stops it —
        the sweep hung with that trial PAUSED at its final epoch and nothing left to run.)
        One stopped seed prunes its configuration: its other seeds stop at their next result
        (or before they start, in ``choose_trial_to_run``) instead of spending the budget."""
        from .seeds import seed_of

        decision = self.inner.on_trial_result(tune_controller, trial, result)
        epoch = int(result.get("epoch", 0) or 0)
        if decision == TrialScheduler.PAUSE and self.epochs and epoch >= self.epochs:
            decision = TrialScheduler.CONTINUE
        number, _ = seed_of(trial.config)
        if number is None:
            return decision
        if decision == TrialScheduler.STOP and epoch < self.epochs:
            self.pruned.add(number)
        elif number in self.pruned:
            setattr(trial, WITH_CONFIGURATION, True)
            return TrialScheduler.STOP
        return decision

    def choose_trial_to_run(self, tune_controller):
        from ray.tune.experiment import Trial

        from .seeds import seed_of

        for trial in tune_controller.get_trials():
            if trial.status in (Trial.PENDING, Trial.PAUSED) and seed_of(trial.config)[0] in self.pruned:
                setattr(trial, WITH_CONFIGURATION, True)
                _stop_waiting(tune_controller, trial)
        if self._restored:
            from .study import ended_trials

            self._restored = False
            ended = ended_trials(Path(self.study_path), self.study_name)
            for trial in tune_controller.get_trials():
                if trial.trial_id in ended and trial.status in (Trial.PENDING, Trial.PAUSED):
                    _stop_waiting(tune_controller, trial)
        return self.inner.choose_trial_to_run(tune_controller)


def _stop_waiting(tune_controller, trial) -> None:
    """Stop a trial that is not running. One that never started has no folder yet, and Ray's result
    grid cannot describe it without one (``Result.path`` raised "Should not access trial_fs_path
    without setting trial_dir_name" and the sweep ended in an error): give it its (empty) folder."""
    trial.init_local_path()
    tune_controller.stop_trial(trial)


def check_scheduler(plan) -> None:
    name = scheduler_name(plan)
    if plan.pareto and name in SINGLE_ONLY:
        raise ConfigError(
            f"scheduler.type: {name} ranks trials by one objective; a pareto sweep (search.mode: pareto) "
            "uses asha (its multi-objective form, mo_asha) or fifo"
        )
    if name in POPULATION and plan.config.search.seeds > 1:
        raise ConfigError(
            f"search.seeds: {name} copies one trial's weights and config into another, so the seeds "
            "of a configuration would not stay its own; use search.seeds 1 with pbt/pb2"
        )
    if name in POPULATION:
        found = mutables(plan)
        if name == "pb2":
            found = [m for m in found if not m.conditional]
        if not found:
            what = "space.train.lr or a numeric weighting range" + (
                " outside a sampled weighting.method" if name == "pb2" else ""
            )
            raise ConfigError(f"scheduler.type: {name} mutates lr and weighting hyperparameters; give {what}")
    if name == "pb2":
        try:
            import sklearn  # noqa: F401
        except ImportError:
            raise ConfigError("scheduler.type: pb2 needs scikit-learn (pip install scikit-learn)") from None


def build_scheduler(plan) -> KeepsStudyEnds:
    return KeepsStudyEnds(_scheduler(plan), plan.study_path, plan.name, plan.base["train"]["epochs"])


def _scheduler(plan):
    from ray.tune.schedulers import (
        ASHAScheduler,
        FIFOScheduler,
        HyperBandScheduler,
        MedianStoppingRule,
    )

    s, epochs, name = plan.config.scheduler, plan.base["train"]["epochs"], scheduler_name(plan)
    # time_attr "epoch" (not training_iteration): it stays right across restores from checkpoints
    if name == "fifo":
        return FIFOScheduler()
    if name == "asha":
        return ASHAScheduler(
            time_attr="epoch", max_t=epochs, grace_period=s.grace_period, reduction_factor=s.reduction_factor
        )
    if name == "mo_asha":
        return MultiObjectiveASHA(plan.objectives, epochs, s.grace_period, s.reduction_factor)
    if name == "hyperband":
        return HyperBandScheduler(time_attr="epoch", max_t=epochs, reduction_factor=s.reduction_factor)
    if name == "median":
        return MedianStoppingRule(time_attr="epoch", grace_period=s.grace_period, min_samples_required=3)
    found = mutables(plan)
    if name == "pbt":
        return BudgetedPBT(
            epochs,
            perturbation_interval=s.perturbation_interval,
            hyperparam_mutations={},  # all of it in Explore: conditional params, clipping, a seed
            custom_explore_fn=Explore(found, plan.config.search.seed),
        )
    bounds = {m.path: [m.low, m.high] for m in found if not m.conditional}
    return BudgetedPB2(epochs, perturbation_interval=s.perturbation_interval, hyperparam_bounds=nest(bounds))


def decision_epochs(plan) -> frozenset[int]:
    """Epochs after which the scheduler may stop (or, PBT, exploit) a trial; trials wait for the
    driver's answer there and run ahead everywhere else (``reporting``)."""
    name, s = scheduler_name(plan), plan.config.scheduler
    epochs = plan.base["train"]["epochs"]
    if name == "fifo":
        return frozenset()
    if name in ("asha", "mo_asha"):  # the first report at or past each rung (grace · rfᵏ < max_t)
        return frozenset(rung_epochs(s.grace_period, s.reduction_factor, epochs))
    if name in POPULATION:
        return frozenset(range(s.perturbation_interval, epochs, s.perturbation_interval))
    return frozenset(range(1, epochs))  # hyperband, median: any epoch before the last


def describe_scheduler(plan) -> str:
    name, s = scheduler_name(plan), plan.config.scheduler
    epochs = plan.base["train"]["epochs"]
    if name in ("asha", "mo_asha"):
        by = ", by non-dominated sorting + crowding distance" if name == "mo_asha" else ""
        s_ = f"grace {s.grace_period}, reduction {s.reduction_factor:g}"
        return f"{LABELS[name]} ({s_}, max {epochs} epochs{by})"
    if name == "hyperband":
        return f"HyperBand (reduction {s.reduction_factor:g}, max {epochs} epochs)"
    if name == "median":
        return f"median stopping rule (grace {s.grace_period}, at least 3 trials per epoch)"
    if name in POPULATION:
        found = mutables(plan) if name == "pbt" else [m for m in mutables(plan) if not m.conditional]
        shown = ", ".join(param_name(m.path) for m in found)
        every = f"every {s.perturbation_interval} epochs the bottom 25 % exploit the top 25 %"
        return f"{LABELS[name]} ({every}; mutates {shown})"
    return "FIFO"
