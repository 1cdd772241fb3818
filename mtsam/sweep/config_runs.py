"""``search.seeds > 1``: one MLflow configuration run beside its seeds' trial runs.

Every seed of a configuration is an ordinary trial run (child of the sweep run, tags
``mtsam.config`` = the Optuna trial number and ``mtsam.seed``). The configuration run is a sibling
(tag ``mtsam.role=config``): the configuration's params, and — once all its seeds have ended — per
epoch the mean of every metric over the seeds (same key), its sample std (``<key>_std``) and the
number of seeds (``seeds``), at step = epoch; the test metrics are the mean and std of each seed's
selected epoch. It ends FINISHED when no seed failed (FAILED otherwise) with the configuration's
outcome: stopped early when any seed was (the configuration is PRUNED in Optuna).

Stateless across ``--resume``: runs are found by their tags, the seeds' epochs read from their
``metrics.jsonl`` artifacts, so a restored tracker finishes a configuration exactly as a live one.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from . import tracking as tr
from .params import run_params
from .seeds import finite, means_with_std, per_epoch_stats

CONFIG_TAG, SEED_TAG = "mtsam.config", "mtsam.seed"
CONFIG_RUN_TAG, SEEDS_TAG = "mtsam.config_run", "mtsam.seeds"


class ConfigRuns:
    """``owner``: the MLflow tracker, or anything with its ``client``, ``experiment_id``,
    ``parent_run_id``, ``sweep_name``, ``epochs``, ``study_path`` and ``_records`` (run id → epoch →
    record already in memory; the runner settles configurations after a restore with none)."""

    def __init__(self, owner, seeds: int) -> None:
        self.tracker = owner
        self.seeds = seeds
        self._runs: dict[int, str] = {}  # Optuna number → configuration run id

    @property
    def client(self):
        return self.tracker.client

    def settle(self) -> int:
        """End every configuration run still RUNNING whose seeds have all ended (their last events
        were in a killed driver's backlog); returns how many."""
        t = self.tracker
        query = f"tags.`{tr.PARENT}` = '{t.parent_run_id}' and tags.`{tr.ROLE}` = 'config'"
        running = [r for r in self.client.search_runs([t.experiment_id], query, max_results=5000)]
        settled = 0
        for run in running:
            if run.info.status == "RUNNING":
                settled += self.seed_ended(int(run.data.tags[CONFIG_TAG]))
        return settled

    def _find(self, number: int, role: str) -> list:
        t = self.tracker
        query = (
            f"tags.`{tr.PARENT}` = '{t.parent_run_id}' and tags.`{tr.ROLE}` = '{role}' "
            f"and tags.`{CONFIG_TAG}` = '{number}'"
        )
        return self.client.search_runs([t.experiment_id], query, max_results=1000)

    def run_for(self, number: int, config: dict) -> str:
        """The configuration run of Optuna trial ``number`` (created with the first seed's run)."""
        if number in self._runs:
            return self._runs[number]
        found = self._find(number, "config")
        if found:
            run_id = found[0].info.run_id
        else:
            t = self.tracker
            tags = {
                tr.PARENT: t.parent_run_id,
                tr.ROLE: "config",
                CONFIG_TAG: number,
                tr.OPTUNA_TRIAL: number,
                SEEDS_TAG: self.seeds,
                "mtsam.sweep": t.sweep_name,
                "mtsam.adapter": config["adapter"]["type"],
                "mtsam.weighting": config["weighting"]["method"],
                tr.EPOCHS_PLANNED: t.epochs,
                tr.NOTE: f"configuration #{number}: mean ± std over {self.seeds} seeds (runs tagged "
                f"{CONFIG_TAG}={number}), filled in when every seed has ended",
            }
            name = tr.run_name(config, f"x{self.seeds}")
            run_id = tr.create_run(self.client, t.experiment_id, tags, f"config{number}-{name}").info.run_id
            tr.log_params(self.client, run_id, run_params(config))
            self._link_study(number, run_id)
        self._runs[number] = run_id
        return run_id

    def _link_study(self, number: int, run_id: str) -> None:
        t = self.tracker
        if t.study_path is None:
            return
        from .study import link_config_run, study_storage

        link_config_run(study_storage(Path(t.study_path)), t.sweep_name, number, run_id)

    def seed_tags(self, number: int, index: int, config: dict) -> dict[str, str]:
        """Tags of a seed's trial run: its configuration and seed, and the configuration run."""
        return {CONFIG_TAG: str(number), SEED_TAG: str(index), CONFIG_RUN_TAG: self.run_for(number, config)}

    def seed_ended(self, number: int) -> bool:
        """After a seed's run ended: once every seed's has, fill in and end the configuration run
        (True)."""
        seeds = [r for r in self._find(number, "trial") if r.info.status in ("FINISHED", "FAILED")]
        if len(seeds) < self.seeds:
            return False
        run_id = self._runs.get(number) or self._find(number, "config")[0].info.run_id
        records = {r.info.run_id: self._records(r.info.run_id) for r in seeds}
        epochs = sorted({e for by_epoch in records.values() for e in by_epoch})
        for epoch in epochs:
            stats = per_epoch_stats(records, epoch)
            shown = {k: v for k, v in stats.items() if k == "seeds" or k.startswith(tr.EPOCH_PREFIXES)}
            tr.log_metrics(self.client, run_id, shown, step=epoch)
        test = self._selected_test(records)
        if test and epochs:
            tr.log_metrics(self.client, run_id, test, step=epochs[-1])
        outcomes = [r.data.tags.get(tr.OUTCOME, "failed") for r in seeds]
        outcome = next((o for o in ("failed", "stopped_early") if o in outcomes), "finished")
        tags = {
            tr.OUTCOME: outcome,
            "mtsam.seed_outcomes": ",".join(outcomes),
            tr.NOTE: f"configuration #{number}: mean ± std over {len(seeds)} seeds; seeds "
            + ", ".join(f"{r.data.tags.get(SEED_TAG)} {o}" for r, o in zip(seeds, outcomes)),
        }
        if outcome == "stopped_early":
            tags[tr.STOPPED_AT] = min(max(by_epoch, default=0) for by_epoch in records.values())
        tags[tr.EPOCHS_PLANNED] = self.tracker.epochs
        tr.set_tags(self.client, run_id, tags)
        self.client.set_terminated(run_id, status="FAILED" if outcome == "failed" else "FINISHED")
        return True

    def _records(self, run_id: str) -> dict[int, dict]:
        """epoch → record of a seed run: the tracker's memory, else its ``metrics.jsonl``."""
        known = getattr(self.tracker, "_records", {}).get(run_id)
        if known:
            return known
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = self.client.download_artifacts(run_id, "metrics.jsonl", tmp)
            except Exception:  # noqa: BLE001 - a seed that failed before its first epoch has none
                return {}
            out = {}
            for line in Path(path).read_text().splitlines():
                record = json.loads(line)
                if isinstance(record.get("epoch"), int):
                    out[record["epoch"]] = record
            return out

    @staticmethod
    def _selected_test(records: dict[str, dict[int, dict]]) -> dict[str, float]:
        """Mean and std over seeds of the test metrics of each seed's selected epoch."""
        chosen = []
        for by_epoch in records.values():
            if not by_epoch:
                continue
            last = by_epoch[max(by_epoch)]
            best = by_epoch.get(last.get("best/epoch"), last)
            chosen.append({k: v for k, v in best.items() if k.startswith("test/") and finite(v)})
        return means_with_std(chosen)


def settle_config_runs(client, experiment_id: str, parent_run_id: str, plan) -> int:
    """At the end of a sweep: configuration runs left RUNNING by a killed driver, ended now."""
    from types import SimpleNamespace

    if plan.config.search.seeds == 1:
        return 0
    owner = SimpleNamespace(
        client=client,
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        sweep_name=plan.name,
        epochs=plan.base["train"]["epochs"],
        study_path=str(plan.study_path),
    )
    return ConfigRuns(owner, plan.config.search.seeds).settle()
