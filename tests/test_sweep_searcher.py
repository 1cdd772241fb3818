"""``StudySearcher`` against the sweep's real Optuna journal, driven through Tune's searcher API the way
Tune drives it (the ASHA sweep itself, with a driver kill, is in test_sweep_resume.py)."""

from __future__ import annotations

import pickle

import optuna
import pytest
from conftest import REPO

from mtsam.sweep.config import load_sweep_config
from mtsam.sweep.plan import make_plan
from mtsam.sweep.sampler import SpaceSampler, paper_point
from mtsam.sweep.searcher import StudySearcher
from mtsam.sweep.study import link_mlflow_run, study_storage, tidy_study

EPOCHS = 3


def _searcher(tmp_path, name, objectives=(("val/delta_b_task", "max"),)) -> StudySearcher:
    cfg, file = load_sweep_config(str(REPO / "tune/configs/quickstart.yaml"), [])
    plan = make_plan(cfg, file)
    return StudySearcher(
        SpaceSampler(plan.config.space, plan.base),
        name,
        tmp_path / "optuna.journal",
        list(objectives),
        EPOCHS,
        sampler=optuna.samplers.TPESampler(seed=0) if len(objectives) == 1 else None,
        first_point=paper_point(plan.config.space, plan.base),
    )


def _result(epoch: int, value: float, params: int = 1000) -> dict:
    return {"epoch": epoch, "val/delta_b_task": value, "model/trainable_params": params}


def _study(tmp_path, name):
    return optuna.load_study(study_name=name, storage=study_storage(tmp_path / "optuna.journal"))


def test_stopped_trials_are_pruned_full_budget_complete_errors_fail(tmp_path):
    search = _searcher(tmp_path, "s")
    first = search.suggest("t1")  # the paper's point, enqueued in the new study
    assert (
        first["adapter"]["ranks"] == {"r1": 32, "r2": 32, "r3": 4} and first["weighting"]["method"] == "fixed"
    )
    assert search.suggest("t2") and search.suggest("t3")
    for epoch, value in ((1, -5.0), (2, 3.0)):
        search.on_trial_result("t1", _result(epoch, value))
    search.on_trial_result("t1", _result(2, 99.0))  # re-reported after a retry: ignored
    search.on_trial_complete("t1", _result(3, 1.0))  # full budget: its best epoch's value
    search.on_trial_result("t2", _result(1, -90.0))
    search.on_trial_complete("t2", _result(2, -80.0))  # ASHA's stop result comes only here
    search.on_trial_result("t3", _result(1, 0.0))
    search.on_trial_complete("t3", None, error=True)

    study = _study(tmp_path, "s")
    assert study.metric_names == ["val/delta_b_task"]
    t1, t2, t3 = study.trials
    assert (t1.state.name, t1.value, t1.intermediate_values) == ("COMPLETE", 3.0, {1: -5.0, 2: 3.0, 3: 1.0})
    assert t2.state.name == "PRUNED" and t2.intermediate_values == {1: -90.0, 2: -80.0}
    assert t2.user_attrs["stopped_at_epoch"] == 2 and t2.user_attrs["epochs_planned"] == EPOCHS
    assert t3.state.name == "FAIL"
    assert [t.user_attrs["ray_trial_id"] for t in study.trials] == ["t1", "t2", "t3"]
    assert t1.params["adapter.r1"] == 32 and "weighting.weights.normal" in t1.params  # dotted names
    assert study.best_trial.number == t1.number  # a stopped trial's early value is never a result


def test_resume_continues_the_running_trial_and_keeps_finished_ones(tmp_path):
    search = _searcher(tmp_path, "r")
    search.suggest("a")
    search.suggest("b")
    search.on_trial_result("a", _result(1, 1.0))
    search.on_trial_result("b", _result(1, 2.0))
    search.on_trial_complete("b", _result(3, 2.5))  # told to the study...
    assert search.optuna_number("b") == 1
    storage = study_storage(tmp_path / "optuna.journal")
    assert link_mlflow_run(storage, "r", "a", "run-a") == 0
    assert link_mlflow_run(storage, "r", "b", "run-b") == 1  # finished: left as it is, no error
    saved = tmp_path / "searcher.pkl"
    search.save(str(saved))
    # ...but the driver dies before Tune saved its state: Tune restores from its own pickle
    restored = pickle.loads(pickle.dumps(search))
    restored.restore(str(saved))
    restored.on_trial_result("a", _result(1, 1.0))  # the trial resumes from its epoch-1 checkpoint
    restored.on_trial_result("a", _result(2, 4.0))
    restored.on_trial_result("b", _result(3, 7.0))  # late report into a finished trial: dropped
    restored.on_trial_complete("b", _result(3, 7.0))
    restored.on_trial_complete("a", _result(3, 0.5))
    restored.suggest("c")  # asked, then the driver is killed before Tune recorded "c"
    assert tidy_study(tmp_path / "optuna.journal", "r") == 1

    a, b, c = _study(tmp_path, "r").trials
    assert a.state.name == "COMPLETE" and a.intermediate_values == {1: 1.0, 2: 4.0, 3: 0.5} and a.value == 4.0
    assert a.user_attrs["mlflow_run_id"] == "run-a" and "mlflow_run_id" not in b.user_attrs
    assert b.state.name == "COMPLETE" and b.value == 2.5
    assert c.state.name == "FAIL" and "never run" in c.user_attrs["mtsam_note"]


def test_multi_objective_keeps_epoch_values_as_user_attr(tmp_path):
    objectives = (("val/delta_b_task", "max"), ("model/trainable_params", "min"))
    search = _searcher(tmp_path, "p", objectives)
    search.suggest("x")
    search.suggest("y")
    search.on_trial_result("x", _result(1, -1.0, 500))
    search.on_trial_complete("x", _result(EPOCHS, 2.0, 500))
    search.on_trial_complete("y", _result(1, -3.0, 400))  # stopped (not by FIFO, but possible)
    study = _study(tmp_path, "p")
    assert study.metric_names == ["val/delta_b_task", "model/trainable_params"]
    x, y = study.trials
    assert x.state.name == "COMPLETE" and x.values == [2.0, 500.0]
    assert x.user_attrs["epoch_values"] == {"1": [-1.0, 500.0], "3": [2.0, 500.0]}
    assert x.intermediate_values == {} and y.state.name == "PRUNED"
    assert [t.number for t in study.best_trials] == [0]


@pytest.mark.parametrize("mode", ["single", "pareto"])
def test_dry_run_uses_the_dotted_names(mode, tmp_path, capsys):
    from mtsam.sweep.cli import main

    args = ["--set", f"search.mode={mode}", "--name", "dotted", "--storage", str(tmp_path), "--dry-run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "adapter.r1" in out and "weighting.weights.depth" in out and "adapter/ranks" not in out


VALUES = (0.5, 0.9, 0.1, 0.7, 0.05)  # per-trial slope: in this order ASHA must stop some trials


def _toy_space(trial) -> dict:
    x = VALUES[trial.number]
    return {"x": trial.suggest_float("x", x, x)}


def test_asha_sweep_prunes_stopped_trials_in_the_study(tmp_path):
    """Real Ray Tune + ASHA + the journal: a stopped trial is PRUNED with its intermediate values,
    only trials that reached the budget are COMPLETE (Ray's OptunaSearch would tell all COMPLETE)."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    def toy_trainable(config: dict) -> None:  # nested: Ray ships it by value to its workers
        for epoch in range(1, 5):
            tune.report({"epoch": epoch, "score": config["x"] * epoch})

    searcher = StudySearcher(_toy_space, "toy", tmp_path / "optuna.journal", [("score", "max")], 4)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        grid = tune.Tuner(
            toy_trainable,
            tune_config=tune.TuneConfig(
                search_alg=ConcurrencyLimiter(searcher, max_concurrent=1),  # a fixed order of arrival
                scheduler=ASHAScheduler(time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2),
                num_samples=len(VALUES),
                metric="score",
                mode="max",
            ),
            run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), name="toy", verbose=0),
        ).fit()
    finally:
        ray.shutdown()
    epochs = {r.metrics["trial_id"]: r.metrics["epoch"] for r in grid}
    study = _study(tmp_path, "toy")
    states = {}
    for t in study.trials:
        last = epochs[t.user_attrs["ray_trial_id"]]
        assert sorted(t.intermediate_values) == list(range(1, last + 1))  # every epoch, also the stop's
        states[t.params["x"]] = t.state.name
        assert t.state.name == ("COMPLETE" if last == 4 else "PRUNED"), (t.params, last)
    assert "PRUNED" in states.values() and "COMPLETE" in states.values()
    assert states[0.05] == "PRUNED" and states[0.5] == "COMPLETE"
    assert study.best_trial.params["x"] == max(x for x, s in states.items() if s == "COMPLETE")
