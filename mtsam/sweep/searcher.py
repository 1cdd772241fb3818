"""``StudySearcher``: a Ray Tune searcher that asks and tells the sweep's persistent Optuna study.

Why not Ray's ``OptunaSearch``: it tells a trial the scheduler stopped after one epoch as COMPLETE
with that epoch's value, so TPE (and optuna-dashboard's history and importance plots) take a
one-epoch score for a final result. Here:

- every epoch's objective is an intermediate value (``report(value, epoch)``);
- a trial that ran its full budget ends COMPLETE with the objective of its best epoch (the epoch
  the trainer selected); one a scheduler stopped early ends PRUNED; an error ends FAIL;
- the study carries the objective names and each Optuna trial the user attr ``ray_trial_id``
  (``mlflow_run_id`` is set by the MLflow tracker once it opened the run).

Tune gives a searcher the result that made the scheduler stop a trial only in
``on_trial_complete`` (never in ``on_trial_result``), without saying it was a stop: an early stop
is a last epoch below the budget. Multi-objective studies cannot hold intermediate values (Optuna
raises for ``report``): a pareto trial keeps them in the user attr ``epoch_values`` instead.

Restore-safe: the study lives in its journal, and the searcher re-finds its Optuna trials by
``ray_trial_id`` (so nothing but the study is state). A trial running at a driver kill continues
in the same Optuna trial; epochs it already reported are not reported again; a trial the study
already finished (Tune's own state lags up to ~10 s) keeps its state and its late reports are dropped.
"""

from __future__ import annotations

import copy
import math
import pickle
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from .params import param_name
from .sampler import SpaceSampler, nest
from .study import RAY_TRIAL_ID, SEED_TRIALS, study_storage

EPOCH_VALUES, EPOCHS_PLANNED = "epoch_values", "epochs_planned"
STOPPED_AT, NOTE = "stopped_at_epoch", "mtsam_note"
# search.seeds > 1 (mtsam.sweep.seeds): the seeds' values and ends, the shared config
SEED_VALUES, SEED_ENDS, CONFIG = "seed_values", "seed_ends", "tune_config"


@dataclass
class _Tracked:
    """One Optuna trial of this sweep (one configuration), as the searcher knows it."""

    trial_id: int  # Optuna's storage id
    number: int
    finished: bool = False
    values: dict[int, tuple[float, ...]] = field(default_factory=dict)  # epoch → objective value(s)
    # search.seeds > 1: the configuration's Tune config, its seeds (Ray trial id → seed index),
    # each seed's objective per epoch and how each seed ended ("complete" / "pruned" / "fail")
    config: dict | None = None
    seeds: dict[str, int] = field(default_factory=dict)
    seed_values: dict[str, dict[int, tuple[float, ...]]] = field(default_factory=dict)
    ended: dict[str, str] = field(default_factory=dict)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


class StudySearcher(Searcher):
    def __init__(
        self,
        space: SpaceSampler,
        study_name: str,
        study_path: Path,
        objectives: list[tuple[str, str]],
        epochs: int,
        sampler=None,
        first_point: dict[str, Any] | None = None,
        seeds: int = 1,
    ) -> None:
        single = len(objectives) == 1
        super().__init__(
            metric=objectives[0][0] if single else [m for m, _ in objectives],
            mode=objectives[0][1] if single else [d for _, d in objectives],
        )
        self.space = space
        self.study_name = study_name
        self.study_path = Path(study_path)
        self.objectives = list(objectives)
        self.epochs = epochs
        self.sampler = sampler
        self.first_point = first_point or {}
        self.seeds = seeds
        self._reset()

    def _reset(self) -> None:
        self._study = None
        self._tracked: dict[str, _Tracked] = {}  # Ray trial id → Optuna trial

    # Tune pickles the searcher into its experiment state: keep the settings, not the open study.
    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in ("_study", "_tracked")}
        state["sampler"] = _without_locks(self.sampler)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.sampler = _with_locks(self.sampler)
        self._reset()

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    # ------------------------------------------------------------------ the study
    @property
    def study(self):
        if self._study is None:
            self._study = open_study(
                self.study_path, self.study_name, self.objectives, self.sampler, self.first_point
            )
            self._index()
        return self._study

    def _index(self) -> None:
        """Find this sweep's Optuna trials again (after a restore: from the journal)."""
        for frozen in self._study.get_trials(deepcopy=False):
            ray_id = frozen.user_attrs.get(RAY_TRIAL_ID)
            if ray_id is None:
                continue
            tracked = _Tracked(frozen._trial_id, frozen.number, frozen.state.is_finished())
            if self.multi_objective:
                stored = frozen.user_attrs.get(EPOCH_VALUES) or {}
                tracked.values = {int(e): tuple(v) for e, v in stored.items()}
            else:
                tracked.values = {int(e): (v,) for e, v in frozen.intermediate_values.items()}
            attrs = frozen.user_attrs
            tracked.config = attrs.get(CONFIG)
            tracked.seeds = {k: int(v) for k, v in (attrs.get(SEED_TRIALS) or {}).items()}
            tracked.ended = dict(attrs.get(SEED_ENDS) or {})
            for rid, by_epoch in (attrs.get(SEED_VALUES) or {}).items():
                tracked.seed_values[rid] = {int(e): tuple(v) for e, v in by_epoch.items()}
            for rid in tracked.seeds or [ray_id]:
                self._tracked[rid] = tracked

    def optuna_number(self, ray_trial_id: str) -> int | None:
        tracked = self._tracked.get(ray_trial_id)
        return tracked.number if tracked else None

    # ------------------------------------------------------------------ Tune's searcher API
    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # objectives and space come with the constructor (the plan)

    def suggest(self, trial_id: str) -> dict | None:
        study = self.study
        if self.seeds > 1:
            group = self._open_group()
            if group is not None:
                return self._add_seed(group, trial_id)
        trial = study.ask()
        trial.set_user_attr(RAY_TRIAL_ID, trial_id)
        trial.set_user_attr(EPOCHS_PLANNED, self.epochs)
        tracked = _Tracked(trial._trial_id, trial.number)
        self._tracked[trial_id] = tracked
        config = nest(self.space(trial))
        if self.seeds == 1:
            return config
        tracked.config = config
        trial.set_user_attr(CONFIG, config)
        return self._add_seed(tracked, trial_id)

    def _open_group(self) -> _Tracked | None:
        """The oldest configuration that still waits for seeds."""
        groups = {id(t): t for t in self._tracked.values()}.values()
        waiting = [t for t in groups if not t.finished and t.config is not None and len(t.seeds) < self.seeds]
        return min(waiting, key=lambda t: t.number, default=None)

    def _add_seed(self, tracked: _Tracked, trial_id: str) -> dict:
        from .seeds import SEED_KEY

        index = len(tracked.seeds)
        tracked.seeds[trial_id] = index
        self._tracked[trial_id] = tracked
        self.study._storage.set_trial_user_attr(tracked.trial_id, SEED_TRIALS, dict(tracked.seeds))
        return {**copy.deepcopy(tracked.config), SEED_KEY: {"index": index, "config": tracked.number}}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.study  # noqa: B018 - opens the study (and the index) after a restore
        tracked = self._tracked.get(trial_id)
        if tracked is not None and not tracked.finished:
            self._report(tracked, result, trial_id)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        from optuna.trial import TrialState

        study = self.study
        tracked = self._tracked.get(trial_id)
        if tracked is None or tracked.finished or trial_id in tracked.ended:
            return  # told before the driver was killed (Tune's state lagged): leave it as it is
        if result:
            self._report(tracked, result, trial_id)  # a scheduler's stop result reaches only this hook
        if tracked.seeds:
            self._seed_complete(tracked, trial_id, result, error)
            return
        storage = study._storage
        last = max(tracked.values, default=int((result or {}).get("epoch", 0) or 0))
        values = None
        if error:
            state = TrialState.FAIL
        elif last < self.epochs:
            state = TrialState.PRUNED
            storage.set_trial_user_attr(tracked.trial_id, STOPPED_AT, last)
        else:
            values = self._best_values(tracked.values)
            state = TrialState.COMPLETE if values is not None else TrialState.FAIL
            if values is None:
                storage.set_trial_user_attr(tracked.trial_id, NOTE, "no finite objective value reported")
        tracked.finished = True
        study.tell(tracked.number, values, state=state)

    # ------------------------------------------------------------------ helpers
    def _objective_values(self, result: dict) -> tuple[float, ...] | None:
        values = tuple(result.get(m) for m, _ in self.objectives)
        return tuple(float(v) for v in values) if all(_finite(v) for v in values) else None

    def _seed_complete(self, tracked: _Tracked, trial_id: str, result: dict | None, error: bool) -> None:
        """One seed ended; once all of them have, the configuration is told: FAIL if a seed
        failed, PRUNED if one was stopped early, else COMPLETE with the mean of the seeds' values
        at each seed's best epoch."""
        from optuna.trial import TrialState

        own = tracked.seed_values.get(trial_id, {})
        last = max(own, default=int((result or {}).get("epoch", 0) or 0))
        tracked.ended[trial_id] = "fail" if error else "pruned" if last < self.epochs else "complete"
        storage = self.study._storage
        storage.set_trial_user_attr(tracked.trial_id, SEED_ENDS, dict(tracked.ended))
        if len(tracked.ended) < self.seeds:
            return
        ends = set(tracked.ended.values())
        values = None
        if "fail" in ends:
            state = TrialState.FAIL
        elif "pruned" in ends:
            state = TrialState.PRUNED
            stopped = [max(v, default=0) for v in tracked.seed_values.values()]
            storage.set_trial_user_attr(tracked.trial_id, STOPPED_AT, min(stopped, default=0))
        else:
            best = [self._best_values(v) for v in tracked.seed_values.values()]
            best = [b for b in best if b is not None]
            state = TrialState.COMPLETE if len(best) == self.seeds else TrialState.FAIL
            if best and state == TrialState.COMPLETE:
                values = [sum(b[i] for b in best) / len(best) for i in range(len(best[0]))]
            else:
                storage.set_trial_user_attr(tracked.trial_id, NOTE, "a seed reported no finite objective")
        tracked.finished = True
        self.study.tell(tracked.number, values, state=state)

    def _report(self, tracked: _Tracked, result: dict, trial_id: str = "") -> None:
        epoch = result.get("epoch")
        values = self._objective_values(result)
        if not _finite(epoch) or values is None:
            return  # no objective this epoch
        epoch = int(epoch)
        if tracked.seeds:  # a seed: the configuration's value is the mean once every seed has it
            own = tracked.seed_values.setdefault(trial_id, {})
            if epoch in own:
                return
            own[epoch] = values
            stored = {
                rid: {str(e): list(v) for e, v in sorted(by.items())}
                for rid, by in tracked.seed_values.items()
            }
            self.study._storage.set_trial_user_attr(tracked.trial_id, SEED_VALUES, stored)
            at_epoch = [by[epoch] for by in tracked.seed_values.values() if epoch in by]
            if len(at_epoch) < self.seeds or epoch in tracked.values:
                return
            values = tuple(sum(v[i] for v in at_epoch) / len(at_epoch) for i in range(len(values)))
        elif epoch in tracked.values:
            return  # reported already (a retried or resumed trial)
        tracked.values[epoch] = values
        storage = self.study._storage
        if self.multi_objective:  # Optuna forbids intermediate values here: a user attr instead
            stored = {str(e): list(v) for e, v in sorted(tracked.values.items())}
            storage.set_trial_user_attr(tracked.trial_id, EPOCH_VALUES, stored)
        else:
            storage.set_trial_intermediate_value(tracked.trial_id, epoch, values[0])

    def _best_values(self, values: dict[int, tuple[float, ...]]) -> list[float] | None:
        """Of epoch → objective value(s) (a trial's or one seed's), those of the best epoch by the
        first objective: the epoch the trainer selects, whose test metrics are the trial's answer."""
        if not values:
            return None
        sign = 1 if self.objectives[0][1] == "max" else -1
        epoch = max(sorted(values), key=lambda e: sign * values[e][0])
        return list(values[epoch])

    def save(self, checkpoint_path: str) -> None:
        # The study is the state; the sampler is saved for its random state, so a restored sweep
        # does not draw the same "random" startup points again.
        asked = len(self._study.get_trials(deepcopy=False)) if self._study is not None else 0
        with open(checkpoint_path, "wb") as fh:
            pickle.dump({"sampler": _without_locks(self.sampler), "asked": asked}, fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            saved = pickle.load(fh)
        self.sampler = _with_locks(saved.get("sampler", self.sampler))
        self._reset()  # the study and its trials are re-read from the journal on first use
        if self.sampler is not None and len(self.study.get_trials(deepcopy=False)) > saved.get("asked", 0):
            self.sampler.reseed_rng()  # trials were asked after the last save: do not repeat their draws


def _without_locks(sampler):
    """A shallow copy without thread locks (Optuna 5's NSGA-II holds one), which pickle refuses;
    Tune pickles the searcher into its experiment state."""
    locks = [k for k, v in vars(sampler).items() if isinstance(v, _LOCK_TYPES)] if sampler else []
    if not locks:
        return sampler
    clone = copy.copy(sampler)
    for k in locks:
        delattr(clone, k)
    clone._mtsam_dropped_locks = locks
    return clone


def _with_locks(sampler):
    for k in getattr(sampler, "_mtsam_dropped_locks", ()):
        setattr(sampler, k, threading.Lock())
    if sampler is not None and hasattr(sampler, "_mtsam_dropped_locks"):
        del sampler._mtsam_dropped_locks
    return sampler


def open_study(
    path: Path, name: str, objectives: list[tuple[str, str]], sampler=None, first_point: dict | None = None
):
    """The sweep's study, created on first use with its objective names and first point."""
    import optuna

    directions = ["maximize" if d == "max" else "minimize" for _, d in objectives]
    study = optuna.create_study(
        storage=study_storage(path),
        study_name=name,
        sampler=sampler,
        directions=directions,
        load_if_exists=True,
    )
    if not study.trials and not study.metric_names:
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2, still the way to name them
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([m for m, _ in objectives])
        if first_point:
            study.enqueue_trial({param_name(k): v for k, v in first_point.items()})
    return study
