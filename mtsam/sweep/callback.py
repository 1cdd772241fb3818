"""``MlflowTracker``: a Tune callback that keeps one nested MLflow child run per trial.

Unlike Ray's stock MLflow callback it is restore-safe: a trial's run is found again by its
``mtsam.trial_id`` tag under the sweep's parent run, and every epoch is logged once (the run's own
metric history says which epochs it has — a retried trial re-reports from its checkpoint).

Training never waits for MLflow. Every hook only appends an operation to an ordered backlog that a
delivery thread works through; Tune's event loop, and with it every trial blocked in
``tune.report`` until the driver has handled its result, goes on at once (a sqlite write or an
HTTP round trip per epoch would otherwise sit on every trial's critical path). When the store is
unreachable the thread keeps the backlog and retries every ``retry_s``; at the end of the sweep it
gets up to ``flush_timeout_s`` more. What still cannot be delivered then is reported in one clear
line (the results stay in the Ray experiment directory).
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections import deque
from pathlib import Path

from ray import tune

from . import artifacts as art
from . import tracking as tr
from .config_runs import ConfigRuns
from .params import run_params
from .sampler import apply_params, flatten
from .schedulers import stopped_with_configuration
from .seeds import seed_of

log = logging.getLogger(__name__)


def _rejected(exc: Exception) -> bool:
    """A request the store answered with a client error (4xx), or one our side could not even
    build: sending it again gives the same answer. Anything else counts as an outage."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, (TypeError, ValueError, KeyError, AttributeError)):
        return True
    if isinstance(exc, MlflowException):
        status = exc.get_http_status_code()
        return 400 <= status < 500 and status not in (408, 429)
    return False


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
        retry_s: float = 2.0,
        study_path: str | None = None,
        log_adapters: str = "none",
        seeds: int = 1,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.trial_base = trial_base
        self.sweep_name = sweep_name
        self.epochs = epochs
        self.scheduler = scheduler
        self.flush_timeout_s = flush_timeout_s
        self.retry_s = retry_s
        self.study_path = study_path  # the Optuna journal: links each Optuna trial to its run
        self.log_adapters = log_adapters  # "all": every trial's adapter when it ends
        self.seeds = seeds  # search.seeds > 1: a configuration run beside its seeds' runs
        self._reset()

    def _reset(self) -> None:
        self._client = None
        self._backlog: deque = deque()  # pending operations, in event order
        self._wake = threading.Condition()  # guards _backlog and _closing
        self._closing = False
        self._deadline = math.inf  # set at the end of the sweep: the last delivery attempt
        self._thread: threading.Thread | None = None
        self._down_since: float | None = None
        self.undelivered = 0
        self.rejected, self._reasons = 0, set()  # updates the store refused (not an outage)
        self._runs: dict[str, str] = {}  # trial id → run id
        self._epochs: dict[str, set[int]] = {}  # run id → epochs already logged
        self._has_model: set[str] = set()
        self._continued: set[str] = set()  # runs a restored sweep found again
        self._placement: dict[str, dict] = {}  # run id → placement tags last set
        self._records: dict[str, dict[int, dict]] = {}  # run id → epoch → record (metrics.jsonl)
        self._study_storage = None
        self._params: dict[str, dict] = {}  # run id → param/* values of its last epoch (PBT)
        self._mutated: dict[str, list[int]] = {}  # run id → epochs whose param/* values changed
        self._configs = ConfigRuns(self, getattr(self, "seeds", 1))

    # Pickled into Ray's tuner.pkl: drop the client and caches, they are rebuilt from MLflow.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        transient = ("_client", "_runs", "_epochs", "_has_model", "_backlog", "_wake", "_closing", "_thread")
        transient += ("_records", "_study_storage", "_params", "_mutated", "_continued", "_configs")
        for key in (*transient, "_down_since", "undelivered", "rejected", "_reasons"):
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
            for stale in (tr.STATUS_REASON, tr.OUTCOME, tr.STOPPED_AT, tr.NOTE):  # "driver stopped"
                if stale in run.data.tags:
                    self.client.delete_tag(run_id, stale)
            self._epochs[run_id] = tr.logged_steps(self.client, run_id)
            self._continued.add(run_id)
            self._records[run_id] = art.records_from_results(getattr(trial, "local_path", None))
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
                tr.EPOCHS_PLANNED: self.epochs,
            }
            run = tr.create_run(self.client, self.experiment_id, tags, tr.run_name(cfg, tid[-5:]))
            run_id = run.info.run_id
            tr.log_params(self.client, run_id, run_params(cfg))
            number, index = seed_of(trial.config)
            if number is not None:
                tr.set_tags(self.client, run_id, self._configs.seed_tags(number, index, cfg))
            art.log_config(self.client, run_id, cfg)
            self._epochs[run_id] = set()
            self._records[run_id] = {}
        self._runs[tid] = run_id
        self._link_study(tid, run_id)
        return run_id

    def _link_study(self, trial_id: str, run_id: str) -> None:
        """Optuna trial ↔ MLflow run: user attr ``mlflow_run_id`` there, tag ``mtsam.optuna_trial`` here."""
        if self.study_path is None:
            return
        from .study import link_mlflow_run, study_storage

        if self._study_storage is None:
            self._study_storage = study_storage(Path(self.study_path))
        number = link_mlflow_run(self._study_storage, self.sweep_name, trial_id, run_id)
        if number is not None:
            tr.set_tags(self.client, run_id, {tr.OPTUNA_TRIAL: number})

    def _finish(
        self, trial, outcome: str, epoch: int, reason: str = "", checkpoint=None, with_configuration=False
    ) -> None:
        run_id = self.run_for(trial)
        records = self._records.setdefault(run_id, {})
        if run_id in self._continued:
            # Tune's result.json lags behind a killed driver; the trial's newest checkpoint does not
            for e, record in art.recovered_records(getattr(trial, "path", None)).items():
                records.setdefault(e, record)
        self._log_missing_epochs(run_id, records)
        outcome, epoch = tr.final_outcome(outcome, epoch, records, self.epochs)
        if records:
            art.log_metrics_jsonl(self.client, run_id, [records[e] for e in sorted(records)])
        if self.log_adapters == "all" and outcome in ("finished", "stopped_early"):
            art.log_adapter(self.client, run_id, checkpoint)
        tags = tr.outcome_tags(outcome, epoch, self.epochs, self.scheduler, reason, with_configuration)
        tr.set_tags(self.client, run_id, tags)
        self.client.set_terminated(run_id, status=tr.OUTCOME_STATUS[outcome])
        number, _ = seed_of(trial.config)
        if number is not None and outcome != "interrupted":
            self._configs.seed_ended(number)

    def _log_missing_epochs(self, run_id: str, records: dict[int, dict]) -> None:
        logged = self._epochs.setdefault(run_id, set())
        if tr.log_missing_epochs(self.client, run_id, records, logged, run_id in self._has_model):
            self._has_model.add(run_id)

    # ------------------------------------------------------------------ backlog
    def _submit(self, operation) -> None:
        with self._wake:
            self._backlog.append(operation)
            if self._thread is None:
                self._thread = threading.Thread(target=self._deliver, name="mlflow-tracker", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _deliver(self) -> None:
        """The delivery thread: run operations in order; on a failure keep the operation and retry."""
        while True:
            with self._wake:
                while not self._backlog and not self._closing:
                    self._wake.wait()
                if not self._backlog:
                    return
                operation = self._backlog[0]
            try:
                operation()
            except Exception as exc:  # noqa: BLE001 - any tracking failure must not stop training
                if _rejected(exc):  # retrying cannot help: say why once and go on with the rest
                    self._reject(exc)
                    with self._wake:
                        self._backlog.popleft()
                        self._wake.notify_all()
                    continue
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    self._say(
                        f"MLflow unreachable ({type(exc).__name__}); training continues, updates are "
                        "kept and retried"
                    )
                with self._wake:
                    if self._closing and time.monotonic() >= self._deadline:
                        return
                    self._wake.wait(self.retry_s)
                continue
            with self._wake:
                self._backlog.popleft()
                self._wake.notify_all()
            if self._down_since is not None:
                down = time.monotonic() - self._down_since
                self._say(f"MLflow reachable again after {down:.0f} s; backlog delivered")
                self._down_since = None

    def _reject(self, exc: Exception) -> None:
        self.rejected += 1
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        if reason not in self._reasons:
            self._reasons.add(reason)
            self._say(f"error: MLflow {self.tracking_uri} rejected a tracking update ({reason}); dropped")

    @staticmethod
    def _say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ Tune hooks
    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self._submit(lambda: self.run_for(trial))

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        result, now_ms = dict(result), int(time.time() * 1000)
        self._submit(lambda: self._log_result(trial, result, now_ms))

    def _log_result(self, trial, result: dict, timestamp_ms: int) -> None:
        if "epoch" not in result:
            return
        run_id = self.run_for(trial)
        epoch = int(result["epoch"])
        placement = tr.placement_tags(result)
        if placement and self._placement.get(run_id) != placement:
            tr.set_tags(self.client, run_id, placement)
            self._placement[run_id] = placement
        if run_id not in self._has_model:
            model = tr.model_metrics(result)
            if model:
                tr.log_metrics(self.client, run_id, model, step=0, timestamp_ms=timestamp_ms)
                self._has_model.add(run_id)
        self._note_mutation(run_id, epoch, result)
        self._records.setdefault(run_id, {})[epoch] = art.record_of(result)
        if epoch in self._epochs[run_id]:
            return  # re-reported after a retry or resume: logged already
        tr.log_metrics(self.client, run_id, tr.epoch_metrics(result), step=epoch, timestamp_ms=timestamp_ms)
        self._epochs[run_id].add(epoch)

    def _note_mutation(self, run_id: str, epoch: int, result: dict) -> None:
        """PBT / PB2: an epoch trained with other ``param/*`` values than the one before is a
        mutation; tag ``mtsam.mutated_at_epochs`` lists them (the values are the metrics)."""
        params = {k: v for k, v in result.items() if k.startswith("param/")}
        if not params:
            return
        last = self._params.get(run_id)
        self._params[run_id] = params
        if last is not None and last != params and epoch not in self._mutated.get(run_id, []):
            self._mutated.setdefault(run_id, []).append(epoch)
            tags = {"mtsam.mutated_at_epochs": ",".join(map(str, self._mutated[run_id]))}
            tr.set_tags(self.client, run_id, tags)

    # Operations read the trial's state when the event happens, not when they are delivered.
    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        last = dict(trial.last_result or {})
        epoch, checkpoint = int(last.get("epoch", 0)), trial.checkpoint
        # Tune hands the result that made the scheduler stop a trial to the callbacks' result hook
        # too (unlike to searchers), so it is logged already; a stop is a last epoch below the budget.
        outcome = "stopped_early" if epoch < self.epochs else "finished"
        together = stopped_with_configuration(trial)
        self._submit(lambda: self._finish(trial, outcome, epoch, "", checkpoint, together))

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        tags = {"mtsam.retries": trial.num_failures, "mtsam.last_error": tr.trial_error(trial)}
        self._submit(lambda: tr.set_tags(self.client, self.run_for(trial), tags))

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        reason = tr.trial_error(trial)
        epoch = int((trial.last_result or {}).get("epoch", 0))
        self._submit(lambda: self._finish(trial, "failed", epoch, reason))

    def on_experiment_end(self, trials: list, **info) -> None:
        self._deadline = time.monotonic() + self.flush_timeout_s
        self._submit(lambda: self._close_running(trials))
        with self._wake:
            self._closing = True
            self._wake.notify_all()
            while self._backlog and time.monotonic() < self._deadline:
                self._wake.wait(max(0.0, self._deadline - time.monotonic()))
            self.undelivered = len(self._backlog)
        self._thread.join(timeout=max(0.0, self._deadline - time.monotonic()) + self.retry_s)
        with self._wake:  # a later event (none expected) starts a fresh delivery thread
            self._thread, self._closing, self._deadline = None, False, math.inf
        if self.undelivered:
            self._say(
                f"error: MLflow store {self.tracking_uri} stayed unreachable: {self.undelivered} tracking "
                f"updates were not delivered (the per-epoch results remain in the Ray experiment directory)"
            )

    def _close_running(self, trials: list) -> None:
        # No RUNNING child may outlive the sweep (e.g. trials still pending when it stopped).
        for trial in trials:
            run_id = self._runs.get(trial.trial_id)
            if run_id and self.client.get_run(run_id).info.status == "RUNNING":
                epoch = int((trial.last_result or {}).get("epoch", 0))
                reason = "sweep interrupted before this trial finished; continue with --resume"
                self._finish(trial, "interrupted", epoch, reason)
