"""``MlflowTracker``: a Tune callback that keeps one nested MLflow child run per trial.

Unlike Ray's stock MLflow callback it is restore-safe: a trial's run is found again by its
``mtsam.trial_id`` tag under the sweep's parent run, and every epoch is logged once (the run's own
metric history says which epochs it has — a retried trial re-reports from its checkpoint).

It is also outage-safe: training never waits for MLflow. Every hook becomes an operation in an
ordered backlog; when the store is unreachable the backlog is kept and retried on the next event,
and at the end of the sweep for up to ``flush_timeout_s``. What still cannot be delivered then is
reported in one clear line (the results stay in the Ray experiment directory).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque

from ray import tune

from . import tracking as tr
from .sampler import apply_params, flatten

log = logging.getLogger(__name__)


class MlflowTracker(tune.Callback):
    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        trial_base: dict,
        sweep_name: str,
        epochs: int,
        scheduler: str,
        flush_timeout_s: float = 120.0,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.trial_base = trial_base
        self.sweep_name = sweep_name
        self.epochs = epochs
        self.scheduler = scheduler
        self.flush_timeout_s = flush_timeout_s
        self._reset()

    def _reset(self) -> None:
        self._client = None
        self._backlog: deque = deque()  # pending operations, in event order
        self._down_since: float | None = None
        self.undelivered = 0
        self._runs: dict[str, str] = {}  # trial id → run id
        self._epochs: dict[str, set[int]] = {}  # run id → epochs already logged
        self._has_model: set[str] = set()

    # Pickled into Ray's tuner.pkl: drop the client and caches, they are rebuilt from MLflow.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for key in ("_client", "_runs", "_epochs", "_has_model", "_backlog", "_down_since", "undelivered"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    @property
    def client(self):
        if self._client is None:
            self._client = tr.client(self.tracking_uri)
        return self._client

    def trial_config(self, trial) -> dict:
        return apply_params(self.trial_base, flatten(trial.config))

    # ------------------------------------------------------------------ runs
    def run_for(self, trial) -> str:
        tid = trial.trial_id
        if tid in self._runs:
            return self._runs[tid]
        found = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{tr.TRIAL_ID}` = '{tid}' and tags.`{tr.PARENT}` = '{self.parent_run_id}'",
            max_results=5,
        )
        if found:  # a restored sweep continues the run it started before
            run = found[0]
            run_id = run.info.run_id
            if run.info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            if tr.STATUS_REASON in run.data.tags:  # stale "driver stopped" note
                self.client.delete_tag(run_id, tr.STATUS_REASON)
            self._epochs[run_id] = tr.logged_steps(self.client, run_id)
            if run.data.metrics.get("model/trainable_params") is not None:
                self._has_model.add(run_id)
        else:
            cfg = self.trial_config(trial)
            tags = {
                tr.PARENT: self.parent_run_id,
                tr.ROLE: "trial",
                tr.TRIAL_ID: tid,
                "mtsam.sweep": self.sweep_name,
                "mtsam.adapter": cfg["adapter"]["type"],
                "mtsam.weighting": cfg["weighting"]["method"],
            }
            run = self.client.create_run(self.experiment_id, tags=tags, run_name=tr.run_name(cfg, tid[-5:]))
            run_id = run.info.run_id
            tr.log_params(self.client, run_id, tr.flatten_config(cfg))
            self._epochs[run_id] = set()
        self._runs[tid] = run_id
        return run_id

    def _finish(self, trial, status: str, reason: str | None) -> None:
        run_id = self.run_for(trial)
        if reason:
            tr.set_tags(self.client, run_id, {tr.STATUS_REASON: reason})
        self.client.set_terminated(run_id, status=status)

    # ------------------------------------------------------------------ backlog
    def _submit(self, operation) -> None:
        self._backlog.append(operation)
        self._flush()

    def _flush(self) -> bool:
        """Run pending operations in order; stop at the first failure (store unreachable)."""
        while self._backlog:
            try:
                self._backlog[0]()
            except Exception as exc:  # noqa: BLE001 - any tracking failure must not stop training
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    print(
                        f"MLflow unreachable ({type(exc).__name__}); training continues, updates are "
                        "kept and retried",
                        file=sys.stderr,
                        flush=True,
                    )
                return False
            self._backlog.popleft()
        if self._down_since is not None:
            print(
                f"MLflow reachable again after {time.monotonic() - self._down_since:.0f} s; "
                "backlog delivered",
                file=sys.stderr,
                flush=True,
            )
            self._down_since = None
        return True

    # ------------------------------------------------------------------ Tune hooks
    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self._submit(lambda: self.run_for(trial))

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        result = dict(result)
        self._submit(lambda: self._log_result(trial, result))

    def _log_result(self, trial, result: dict) -> None:
        if "epoch" not in result:
            return
        run_id = self.run_for(trial)
        epoch = int(result["epoch"])
        if run_id not in self._has_model:
            model = tr.model_metrics(result)
            if model:
                tr.log_metrics(self.client, run_id, model, step=0)
                self._has_model.add(run_id)
        if epoch in self._epochs[run_id]:
            return  # re-reported after a retry or resume: logged already
        tr.log_metrics(self.client, run_id, tr.epoch_metrics(result), step=epoch)
        self._epochs[run_id].add(epoch)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._submit(lambda: self._complete(trial))

    def _complete(self, trial) -> None:
        last = trial.last_result or {}
        epoch = int(last.get("epoch", 0))
        if epoch < self.epochs:
            self._finish(trial, "KILLED", f"early-stopped by {self.scheduler} at epoch {epoch}")
        else:
            self._finish(trial, "FINISHED", None)

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        self._submit(lambda: self._recover(trial))

    def _recover(self, trial) -> None:
        run_id = self.run_for(trial)
        reason = tr.trial_error(trial)
        tr.set_tags(self.client, run_id, {"mtsam.retries": trial.num_failures, "mtsam.last_error": reason})

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        reason = tr.trial_error(trial)
        self._submit(lambda: self._finish(trial, "FAILED", reason))

    def on_experiment_end(self, trials: list, **info) -> None:
        self._submit(lambda: self._close_running(trials))
        deadline = time.monotonic() + self.flush_timeout_s
        while self._backlog and time.monotonic() < deadline:
            time.sleep(2.0)
            self._flush()
        self.undelivered = len(self._backlog)
        if self.undelivered:
            print(
                f"error: MLflow store {self.tracking_uri} stayed unreachable: {self.undelivered} tracking "
                f"updates were not delivered (the per-epoch results remain in the Ray experiment directory)",
                file=sys.stderr,
                flush=True,
            )

    def _close_running(self, trials: list) -> None:
        # No RUNNING child may outlive the sweep (e.g. trials still pending when it stopped).
        for trial in trials:
            run_id = self._runs.get(trial.trial_id)
            if run_id and self.client.get_run(run_id).info.status == "RUNNING":
                self._finish(
                    trial, "KILLED", "sweep interrupted before this trial finished; continue with --resume"
                )
