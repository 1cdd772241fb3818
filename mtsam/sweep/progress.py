"""A concise console progress display: one line per trial event instead of Tune's big tables."""

from __future__ import annotations

from ray import tune

from .console import Clock, fmt_metric, say
from .sampler import apply_params, flatten
from .schedulers import stopped_with_configuration
from .tracking import run_name, stop_note, trial_error


class ProgressPrinter(tune.Callback):
    def __init__(
        self, clock: Clock, trial_base: dict, num_samples: int, epochs: int, metric: str, scheduler: str
    ) -> None:
        self.clock, self.trial_base = clock, trial_base
        self.num_samples, self.epochs, self.metric, self.scheduler = num_samples, epochs, metric, scheduler
        self._names: dict[str, str] = {}

    @staticmethod
    def _count_done(trials, trial) -> int:
        # from Tune's own statuses, so a resumed sweep counts its earlier trials too
        return len({t.trial_id for t in trials if t.status in ("TERMINATED", "ERROR")} | {trial.trial_id})

    def _name(self, trial) -> str:
        if trial.trial_id not in self._names:
            cfg = apply_params(self.trial_base, flatten(trial.config))
            self._names[trial.trial_id] = run_name(cfg, trial.trial_id[-5:])
        return self._names[trial.trial_id]

    def _say(self, text: str) -> None:
        say(self.clock, text)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._say(f"start    {self._name(trial)}")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if "epoch" not in result:
            return
        short = self.metric.removeprefix("val/")
        loss = result.get("train/loss/total")
        self._say(
            f"epoch {int(result['epoch'])}/{self.epochs} {self._name(trial)}  "
            f"{short} {fmt_metric(self.metric, result.get(self.metric))}  "
            f"loss {fmt_metric('loss', loss)}  {result.get('train/epoch_time_s', 0):.1f}s"
        )

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        last = trial.last_result or {}
        epoch = int(last.get("epoch", 0))
        together = stopped_with_configuration(trial)
        what = "finished" if epoch >= self.epochs else stop_note(self.scheduler, epoch, 0, together)
        count = f"{self._count_done(trials, trial)}/{self.num_samples} trials"
        self._say(f"done     {self._name(trial)}  {what}  ({count})")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._say(f"retry    {self._name(trial)}  from its last checkpoint ({trial_error(trial)})")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._say(
            f"FAILED   {self._name(trial)}  {trial_error(trial)}  "
            f"({self._count_done(trials, trial)}/{self.num_samples} trials)"
        )
