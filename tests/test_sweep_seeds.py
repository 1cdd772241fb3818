"""``search.seeds: k`` (issue 20): every configuration Optuna draws trains with k seeds.

The searcher is driven through Tune's searcher API on the real Optuna journal (as in
test_sweep_searcher.py); the sweep test runs real Ray Tune, Optuna and MLflow end to end.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import optuna
import pandas as pd
import pytest
from conftest import REPO, run_search
from mlflow import MlflowClient
from ray import tune

from mtsam.errors import ConfigError
from mtsam.sweep.config import load_sweep_config
from mtsam.sweep.plan import make_plan
from mtsam.sweep.sampler import SpaceSampler, apply_params, flatten, paper_point
from mtsam.sweep.schedulers import stopped_with_configuration
from mtsam.sweep.searcher import StudySearcher
from mtsam.sweep.seeds import config_rows, mean_std, welch
from mtsam.sweep.study import ended_trials, study_storage, trial_numbers
from mtsam.sweep.tracking import stop_note

EPOCHS, SEEDS = 3, 3


def _searcher(tmp_path, name: str = "s") -> StudySearcher:
    plan = make_plan(*load_sweep_config(str(REPO / "tune/configs/quickstart.yaml"), []))
    return StudySearcher(
        SpaceSampler(plan.config.space, plan.base),
        name,
        tmp_path / "optuna.journal",
        [("val/delta_b_task", "max")],
        EPOCHS,
        sampler=optuna.samplers.TPESampler(seed=0),
        first_point=paper_point(plan.config.space, plan.base),
        seeds=SEEDS,
    )


def _result(epoch: int, value: float) -> dict:
    return {"epoch": epoch, "val/delta_b_task": value}


def _study(tmp_path, name: str = "s"):
    return optuna.load_study(study_name=name, storage=study_storage(tmp_path / "optuna.journal"))


class _StopTexts(tune.Callback):
    """How the sweep's tracker and progress line describe each trial that ended below its budget."""

    def __init__(self, epochs: int) -> None:
        self.epochs, self.texts = epochs, {}

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        epoch = int((trial.last_result or {}).get("epoch", 0))
        if epoch < self.epochs:
            together = stopped_with_configuration(trial)
            self.texts[trial.trial_id] = stop_note("ASHA", epoch, self.epochs, together)


def test_seeds_share_one_configuration_and_optuna_gets_their_mean(tmp_path):
    search = _searcher(tmp_path)
    configs = [search.suggest(f"t{i}") for i in range(2 * SEEDS)]
    first, second = configs[:SEEDS], configs[SEEDS:]
    assert [c["seed"] for c in first] == [{"index": i, "config": 0} for i in range(SEEDS)]
    assert [c["seed"]["config"] for c in second] == [1] * SEEDS
    strip = [{k: v for k, v in c.items() if k != "seed"} for c in configs]
    assert strip[0] == strip[1] == strip[2] and strip[3] == strip[4] == strip[5]
    assert strip[0] != strip[3]
    assert len(_study(tmp_path).trials) == 2  # one Optuna trial per configuration
    # the run configs differ only in their seeds: adapter init, data order (model, train)
    base = {
        "model": {"seed": 5},
        "train": {"seed": 7},
        "adapter": {"type": "tora"},
        "weighting": {"method": "ew"},
    }
    base["data"] = {"tasks": ["semantic"]}
    seeded = [apply_params(base, flatten(c)) for c in first]
    assert [(c["model"]["seed"], c["train"]["seed"]) for c in seeded] == [(5, 7), (6, 8), (7, 9)]

    # configuration 0: all seeds run the full budget; values per seed per epoch
    values = {"t0": [1.0, 4.0, 2.0], "t1": [2.0, 3.0, 5.0], "t2": [0.0, 2.0, 3.0]}
    for epoch in range(1, EPOCHS + 1):
        for tid, vs in values.items():
            search.on_trial_result(tid, _result(epoch, vs[epoch - 1]))
    for tid in values:
        search.on_trial_complete(tid, None)
    # configuration 1: seed t4 is stopped by the scheduler at epoch 1, the others follow
    for tid in ("t3", "t4", "t5"):
        search.on_trial_result(tid, _result(1, -10.0))
    search.on_trial_complete("t4", _result(1, -10.0))
    assert _study(tmp_path).trials[1].state.name == "RUNNING"  # not before every seed has ended
    search.on_trial_complete("t3", _result(2, -5.0))
    search.on_trial_complete("t5", _result(3, 1.0))

    t0, t1 = _study(tmp_path).trials
    assert t0.state.name == "COMPLETE"
    # mean of each seed's best epoch (4, 5, 3), not the best of the epoch means
    assert t0.value == pytest.approx(4.0)
    assert t0.intermediate_values == pytest.approx({1: 1.0, 2: 3.0, 3: 10 / 3})
    assert t1.state.name == "PRUNED" and t1.user_attrs["stopped_at_epoch"] == 1
    assert t1.intermediate_values == {1: -10.0}
    assert trial_numbers(tmp_path / "optuna.journal", "s") == {f"t{i}": i // SEEDS for i in range(6)}
    assert ended_trials(tmp_path / "optuna.journal", "s") == {f"t{i}" for i in range(6)}


def test_a_restored_searcher_finishes_a_configuration_half_told(tmp_path):
    search = _searcher(tmp_path, "r")
    for i in range(2):
        search.suggest(f"a{i}")
    search.on_trial_result("a0", _result(1, 2.0))
    search.on_trial_complete("a0", _result(EPOCHS, 4.0))
    search = pickle.loads(pickle.dumps(search))  # as Tune restores it after a driver kill
    assert search.suggest("a2")["seed"] == {"index": 2, "config": 0}  # the open configuration first
    search.on_trial_result("a1", _result(1, 0.0))
    search.on_trial_complete("a1", _result(EPOCHS, 1.0))
    search.on_trial_complete("a2", _result(EPOCHS, 7.0))
    (trial,) = _study(tmp_path, "r").trials
    assert trial.state.name == "COMPLETE" and trial.value == pytest.approx((4.0 + 1.0 + 7.0) / 3)


def test_seed_statistics_and_refusals(tmp_path):
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0, 3)
    assert mean_std([2.0]) == (2.0, None, 1)
    # Welch's t-test (scipy) on clearly separated vs overlapping samples; one sample against 0
    assert welch([10.0, 11.0, 12.0], [0.0, 1.0, 2.0]) < 0.01
    assert welch([1.0, 2.0, 3.0], [1.5, 2.5, 2.0]) > 0.5
    assert welch([5.0, 5.5, 6.0]) < 0.01 and welch([-1.0, 1.0, 0.5]) > 0.5
    assert welch([1.0]) is None
    rows = [
        {
            "config_number": c,
            "seed": s,
            "outcome": o,
            "status": o,
            "epochs": e,
            "score": v,
            "name": f"x-{c}{s}",
        }
        | {"trial_id": f"{c}{s}", "test": {"test/delta_b_task": v / 2}, "best_epoch": e}
        for c, s, o, e, v in [
            (0, 0, "finished", 3, 1.0),
            (0, 1, "finished", 3, 3.0),
            (1, 0, "finished", 3, 9.0),
        ]
        + [(1, 1, "stopped_early", 1, -2.0)]
    ]
    first, second = config_rows(rows, "max")
    assert (first["outcome"], first["score"], first["seeds"], first["trial_id"]) == ("finished", 2.0, 2, "01")
    assert first["test"]["test/delta_b_task"] == 1.0 and first["test_std"]["test/delta_b_task"] > 0
    assert second["outcome"] == "stopped_early" and second["status"] == "stopped@1"
    refused = [f"storage={tmp_path}", "scheduler.type=pbt", "search.seeds=2"]
    with pytest.raises(ConfigError, match=r"^search.seeds: pbt copies one trial's weights"):
        make_plan(*load_sweep_config(None, refused))  # before any trial or folder
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_sweep_with_seeds_end_to_end(tmp_path):
    """2 configurations × 2 seeds, real Ray/Optuna/MLflow, single-task baselines with the same 2 seeds."""
    storage, name = tmp_path / "runs", "seeded"
    args = f"--storage {storage} --name {name} --num-samples 2 --epochs 2".split()
    args += ["--set", "search.seeds=2", "--set", "scheduler.type=fifo"]
    proc = run_search(args)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = proc.stdout
    assert "2 configurations × 2 seeds = 4 trials" in out
    assert "configurations, mean ± std over 2 seeds" in out and " ± " in out
    assert "Welch's t-test over seeds" in out
    client = MlflowClient(f"sqlite:///{storage.resolve()}/mlflow.db")
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    by_role: dict[str, list] = {}
    for run in runs:
        by_role.setdefault(run.data.tags.get("mtsam.role"), []).append(run)
    assert len(by_role["trial"]) == 4 and len(by_role["config"]) == 2
    assert len(by_role["baseline"]) == 3 * 2  # each task once per seed
    sweep_id = by_role["sweep"][0].info.run_id
    with open(client.download_artifacts(sweep_id, "baseline.json", str(tmp_path))) as fh:
        baseline = json.load(fh)
    assert baseline["seeds"] == 2 and baseline["std"]["val"]["semantic"]["miou"] is not None
    parent_id = by_role["sweep"][0].info.run_id
    study = optuna.load_study(study_name=name, storage=study_storage(storage / name / "optuna.journal"))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for config in by_role["config"]:
        number = config.data.tags["mtsam.config"]
        seeds = [r for r in by_role["trial"] if r.data.tags.get("mtsam.config") == number]
        assert sorted(r.data.tags["mtsam.seed"] for r in seeds) == ["0", "1"]
        assert all(r.data.tags["mlflow.parentRunId"] == parent_id for r in [config, *seeds])
        assert config.info.status == "FINISHED" and config.data.tags["mtsam.outcome"] == "finished"
        for epoch in (1, 2):  # the configuration run: mean and std of the seeds at step = epoch
            values = [_at(client, r.info.run_id, "val/delta_b_task", epoch) for r in seeds]
            mean, std, _ = mean_std(values)
            assert _at(client, config.info.run_id, "val/delta_b_task", epoch) == pytest.approx(mean)
            assert _at(client, config.info.run_id, "val/delta_b_task_std", epoch) == pytest.approx(std)
            assert _at(client, config.info.run_id, "seeds", epoch) == 2
        trial = study.trials[int(number)]
        assert trial.user_attrs["mlflow_run_id"] == config.info.run_id
        best = [max(_history(client, r.info.run_id, "val/delta_b_task")) for r in seeds]
        assert trial.value == pytest.approx(sum(best) / 2)  # the mean of the seeds' selected epochs
        assert config.data.params == seeds[0].data.params  # the same configuration
    parent = client.get_run(parent_id)
    assert (
        parent.data.metrics["sweep/seeds"] == 2 and "sweep/best/val/delta_b_task_std" in parent.data.metrics
    )
    assert "mean over 2 seeds" in parent.data.tags["mlflow.note.content"]

    # analysis: the seeds as trials with their configuration, and the configurations as mean ± std
    from analysis.labels import header
    from analysis.mlflow_source import load_mlflow_sweep
    from analysis.report import main as report_main
    from analysis.seeds import config_table
    from analysis.summary import summarize

    sweep = load_mlflow_sweep(f"sqlite:///{storage.resolve()}/mlflow.db", name)
    trials = sweep.trials
    assert sorted(zip(trials["config"], trials["seed"])) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert not [c for c in trials.columns if c.startswith("seed.")]  # a seed is no hyperparameter
    summary = summarize(sweep)
    column = sweep.objective.column
    table = config_table(trials, column, True, [])
    assert f"{header(column)} mean" in summary.tables["configurations"].columns
    for _, row in table.iterrows():
        config = next(r for r in by_role["config"] if r.data.tags["mtsam.config"] == str(row["config"]))
        best = study.trials[int(row["config"])].value  # mean of the seeds' selected-epoch values
        assert row[f"{column} mean"] == pytest.approx(best)
        assert row["seeds"] == 2 and config.info.status == "FINISHED"
    assert "configurations" in summary.figures and "val std" in summary.tables["baseline"].columns
    results = summary.tables["results"]  # per group: the best configuration's means, with their std
    assert "± std" in results.columns and set(results["trial"].dropna()) <= {"config#0", "config#1", ""}
    assert any("Welch's t-test" in note for note in summary.notes)
    assert (
        report_main(
            [
                "--tracking-uri",
                f"sqlite:///{storage.resolve()}/mlflow.db",
                "--experiment",
                name,
                "--out",
                str(tmp_path / "report"),
            ]
        )
        == 0
    )
    page = (tmp_path / "report" / "report.html").read_text()
    assert "Configurations over seeds (mean ± std)" in page and "mean ± std (error bar)" in page


def _history(client, run_id: str, key: str) -> list[float]:
    return [m.value for m in client.get_metric_history(run_id, key)]


def _at(client, run_id: str, key: str, step: int) -> float:
    (value,) = [m.value for m in client.get_metric_history(run_id, key) if m.step == step]
    return value


def test_asha_stopping_one_seed_stops_its_siblings(tmp_path):
    """Real Ray Tune with the sweep's searcher and scheduler (search.seeds 2, ASHA) on a toy
    trainable: a configuration is PRUNED exactly when a seed was stopped early, and a seed still
    running when its sibling was stopped is stopped too instead of spending the budget."""
    import ray

    from mtsam.sweep.schedulers import build_scheduler
    from mtsam.sweep.tuning import build_searcher

    epochs, configs = 4, 5

    def toy_trainable(config: dict) -> None:  # nested: Ray ships it by value
        import time

        from ray import tune

        for epoch in range(1, epochs + 1):
            time.sleep(0.4)  # spaced results, so a sibling is still running when a seed stops
            value = 1000 * config["train"]["lr"] * epoch + config["seed"]["index"] * 0.01
            tune.report({"epoch": epoch, "val/delta_b_task": value, "t": time.time()})

    args = [f"storage={tmp_path / 'runs'}", "name=toy", f"base.train.epochs={epochs}"]
    args += [f"search.num_samples={configs}", "search.seeds=2", "search.max_concurrent=2", "search.seed=3"]
    plan = make_plan(*load_sweep_config(None, args))
    plan.state_dir.mkdir(parents=True)
    texts = _StopTexts(epochs)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        grid = tune.Tuner(
            toy_trainable,
            tune_config=tune.TuneConfig(
                search_alg=build_searcher(plan),
                scheduler=build_scheduler(plan),
                num_samples=plan.tune_trials,
                metric=plan.metric,
                mode=plan.mode,
                trial_dirname_creator=lambda trial: trial.trial_id,
            ),
            run_config=tune.RunConfig(
                storage_path=str(tmp_path / "ray"), name="toy", verbose=0, callbacks=[texts]
            ),
        ).fit()
    finally:
        ray.shutdown()
    assert not grid.errors and len(grid) == configs * 2
    # a seed stopped before it started (its sibling was stopped meanwhile) has no results at all
    empty = pd.DataFrame({"epoch": [0], "t": [math.inf], "val/delta_b_task": [math.nan]})
    frames = {Path(r.path).name: r.metrics_dataframe for r in grid}
    runs = {tid: df if df is not None and "epoch" in df else empty for tid, df in frames.items()}
    study = optuna.load_study(study_name="toy", storage=study_storage(plan.study_path))
    assert len(study.trials) == configs
    pruned = with_config = 0
    for trial in study.trials:
        seeds = trial.user_attrs["seed_trials"]
        assert sorted(seeds.values()) == [0, 1]
        last = {tid: int(runs[tid]["epoch"].max()) for tid in seeds}
        stopped = [tid for tid, e in last.items() if e < epochs]
        assert trial.state.name == ("PRUNED" if stopped else "COMPLETE"), (trial.number, last)
        if not stopped:
            finals = [float(runs[tid]["val/delta_b_task"].max()) for tid in seeds]
            assert trial.value == pytest.approx(sum(finals) / 2)
            continue
        pruned += 1
        first_stop = min(float(runs[tid]["t"].max()) for tid in stopped)
        for tid in seeds:  # a seed that was running when its sibling stopped did not run on
            if float(runs[tid]["t"].min()) < first_stop:
                assert last[tid] < epochs, (trial.number, last)
        # the seed ASHA stopped says so; a sibling stopped because of it says it went with its configuration
        first = min(stopped, key=lambda tid: float(runs[tid]["t"].max()))
        assert texts.texts[first] == f"stopped by ASHA at epoch {last[first]} of {epochs}"
        sibling = " with its configuration (another seed was stopped by ASHA)"
        for tid in set(stopped) - {first}:
            text = texts.texts[tid]
            allowed = ("stopped by ASHA at epoch", "stopped at epoch", "stopped before its first epoch")
            assert text.startswith(allowed), texts.texts
            with_config += text.endswith(sibling)
    assert with_config == sum(t.endswith("stopped by ASHA)") for t in texts.texts.values())
    assert pruned >= 1  # ASHA (reduction 2) stops the lower half at its rungs


def test_a_seed_stopped_before_it_started_is_a_result_row(tmp_path):
    """One trial at a time: seed 0 is stopped at epoch 1, so seed 1 is stopped before it starts.
    Ray's result grid must still describe it (a never-started trial had no folder, and reading its
    ``Result.path`` ended a user's sweep in "Should not access trial_fs_path …"), and it is described
    as stopped with its configuration."""
    import ray
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    from mtsam.sweep.schedulers import KeepsStudyEnds
    from mtsam.sweep.tuning import build_searcher

    epochs = 3

    class StopsSeedZero(FIFOScheduler):
        def on_trial_result(self, tune_controller, trial, result):
            return TrialScheduler.STOP if trial.config["seed"]["index"] == 0 else TrialScheduler.CONTINUE

    def toy_trainable(config: dict) -> None:
        from ray import tune

        for epoch in range(1, epochs + 1):
            tune.report({"epoch": epoch, "val/delta_b_task": float(epoch)})

    args = [f"storage={tmp_path / 'runs'}", "name=never", f"base.train.epochs={epochs}"]
    args += ["search.num_samples=1", "search.seeds=2", "search.max_concurrent=1", "search.seed=3"]
    plan = make_plan(*load_sweep_config(None, args))
    plan.state_dir.mkdir(parents=True)
    texts = _StopTexts(epochs)
    scheduler = KeepsStudyEnds(StopsSeedZero(), plan.study_path, plan.name, epochs)
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        grid = tune.Tuner(
            toy_trainable,
            tune_config=tune.TuneConfig(
                search_alg=build_searcher(plan),
                scheduler=scheduler,
                num_samples=plan.tune_trials,
                metric=plan.metric,
                mode=plan.mode,
            ),
            run_config=tune.RunConfig(
                storage_path=str(tmp_path / "ray"), name="never", verbose=0, callbacks=[texts]
            ),
        ).fit()
    finally:
        ray.shutdown()
    assert not grid.errors and len(grid) == 2
    paths = [Path(r.path) for r in grid]  # every Result.path readable
    started = [r.metrics.get("epoch") for r in grid]
    assert sorted(started, key=str) == [1, None] and all(p.is_dir() for p in paths)  # seed 1 never trained
    assert sorted(texts.texts.values()) == [
        "stopped before its first epoch with its configuration (another seed was stopped by ASHA)",
        "stopped by ASHA at epoch 1 of 3",
    ]
    (trial,) = optuna.load_study(study_name="never", storage=study_storage(plan.study_path)).trials
    assert trial.state.name == "PRUNED"
