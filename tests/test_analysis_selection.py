"""Selection on validation, early-stopped trials marked, Δb explained: a real MLflow store written
in the tracking contract of issue 14 (conftest_analysis.populate_contract_store).

Hand values (task-averaged Δb, %): only semantic miou differs from the baseline (0.50), so
Δb = 100 · ((miou − 0.5) / 0.5 / 2) / 2. Val: A 5, B 1, C −5, D 22.5 (stopped); test: A −2.5, B 10.
"""

from __future__ import annotations

import pandas as pd
import pytest
from conftest_analysis import CONTRACT_TRIVIAL, populate_contract_store

import analysis
from analysis.importance import param_importance, searched_params
from analysis.report import main as report_main
from analysis.summary import summarize


def delta(miou: float) -> float:
    return 100 * ((miou - 0.5) / 0.5 / 2) / 2


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return populate_contract_store(tmp_path_factory.mktemp("contract"))


@pytest.fixture(scope="module")
def sweep(store):
    return analysis.load_sweep(store["uri"], store["experiment"])


@pytest.fixture(scope="module")
def summary(sweep):
    return summarize(sweep)


def test_outcomes_from_the_contract_tags(sweep):
    t = sweep.trials.set_index("trial_id")
    assert t["outcome"].to_dict() == {
        "A": "finished",
        "B": "finished",
        "C": "finished",
        "D": "stopped_early",
        "E": "failed",
    }
    assert t.loc["D", "status"] == "FINISHED" and t.loc["D", "stopped_at_epoch"] == 1
    assert t["epochs_planned"].tolist() == [3] * 5
    assert t["ranks"].tolist()[:3] == ["16/16/4", "32/16/4", "8/16/4"] and t.loc["B", "R1"] == 32
    assert sweep.compared["trial_id"].tolist() == ["A", "B", "C"]


def test_objective_comes_from_the_sweep_and_ranks_on_validation(sweep):
    o = sweep.objective
    assert (o.key, o.column, o.test_column, o.higher_is_better) == (
        "val/delta_b_task",
        "val_delta_b_task",
        "test_delta_b_task",
        True,
    )
    t = sweep.trials.set_index("trial_id")
    assert t["val_delta_b_task"].loc[["A", "B", "C", "D"]].tolist() == pytest.approx([5, 1, -5, 22.5])
    assert t["test_delta_b_task"].loc[["A", "B"]].tolist() == pytest.approx([-2.5, 10])


def test_report_picks_by_validation_never_by_test_or_a_stopped_trial(sweep, store, tmp_path):
    table = analysis.results_table(sweep.trials, by=(), baseline=sweep.baseline, trivial=sweep.trivial)
    picked = table.iloc[2:]  # after the baseline and trivial-predictor rows
    # A: best val (5 %) though B is far better on test (10 % vs −2.5 %); D (22.5 %) stopped early
    assert picked["trial"].tolist() == ["A"]
    assert picked["test Δb task-avg (%) ↑"].tolist() == pytest.approx([delta(0.45)])
    by_method = analysis.results_table(sweep.trials, by=("weighting",))
    assert by_method["trial"].tolist() == ["A", "B"]  # dwa's best full-budget trial is B, not D
    out = tmp_path / "report"
    argv = ["--tracking-uri", store["uri"], "--experiment", "contract", "--out", str(out)]
    assert report_main(argv) == 0
    results = pd.read_csv(out / "results.csv")
    trials = results[results["trial"].notna()]
    assert trials["trial"].tolist()[0] == "A"
    html = (out / "report.html").read_text()
    assert "stopped@1" in html and "val/delta_b_task (max; sweep)" in html


def test_reference_rows_baseline_and_trivial_predictor(sweep):
    table = analysis.results_table(sweep.trials, baseline=sweep.baseline, trivial=sweep.trivial)
    refs = table.iloc[:2].set_index("adapter")
    assert list(refs.index) == ["single-task baseline", "trivial predictor"]
    assert (
        refs.loc["trivial predictor", "test semantic miou ↑"] == CONTRACT_TRIVIAL["test"]["semantic"]["miou"]
    )
    # trivial vs baseline: semantic (−0.9 − 0.625)/2, depth −(1.0 + 1.5)/2 → task-averaged
    expected = 100 * ((-0.9 - 0.625) / 2 - (1.0 + 1.5) / 2) / 2
    assert refs.loc["trivial predictor", "test Δb task-avg (%) ↑"] == pytest.approx(expected)
    assert refs.loc["single-task baseline", "val Δb task-avg (%) ↑ [ranks]"] == 0.0


def test_stopped_trials_never_set_an_axis_range_or_a_mean(summary, sweep):
    w = analysis.weighting_comparison(sweep.trials).set_index("weighting")
    assert w.loc["dwa", "mean"] == pytest.approx(delta(0.52)) and w.loc["dwa", "stopped early"] == 1
    for name in ("weighting", "hyperparameters", "rank_sensitivity"):
        for ax in summary.figures[name].axes:
            if ax.get_visible() and ax.collections:
                low, high = ax.get_ylim()
                assert high < delta(0.95), (name, ax.get_title(), high)  # D's 22.5 % is outside
    curves = summary.figures["learning_curves"].axes[1]  # val semantic miou per epoch: D has 0.95
    assert curves.get_ylim()[1] < 0.95 and "miou" in curves.get_ylabel()
    table = summary.tables["trials"].set_index("trial_id")
    assert table.loc["D", "outcome"] == "stopped@1"
    assert list(table.index[:3]) == ["A", "B", "C"]  # full-budget first, best val first


def test_every_searched_hyperparameter_is_in_the_tables_and_plots(summary, sweep):
    searched = searched_params(sweep.trials, sweep.param_columns)
    assert set(searched) == {"adapter.r1", "train.lr", "weighting.method", "weighting.temperature"}
    table = summary.tables["trials"]
    assert {"train.lr", "weighting.temperature"} <= set(table.columns) and "ranks" in table.columns
    titles = [ax.get_title() for ax in summary.figures["hyperparameters"].axes if ax.get_visible()]
    assert set(titles) == set(searched)


def test_importance_uses_optuna_on_the_complete_trials_only(sweep):
    searched = searched_params(sweep.trials, sweep.param_columns)
    result = param_importance(sweep.trials, searched, "val_delta_b_task")
    assert result.trials == 3  # A, B, C: D stopped early, E failed
    assert set(result.table["param"]) == {"adapter.r1", "train.lr", "weighting.method"}
    assert result.table["fanova"].sum() == pytest.approx(1.0)
    assert any("weighting.temperature" in n for n in result.notes)  # set for dwa trials only


def test_pareto_uses_the_adapter_parameters_that_differ(summary, sweep):
    assert "adapter parameters (count) ↓" in summary.tables["pareto"].columns
    assert summary.figures["pareto"].axes[0].get_xlabel() == "adapter parameters (count) ↓"


def test_delta_b_is_explained_with_the_baseline_runs(summary, sweep, store):
    assert any("gain(t, m)" in line for line in summary.explain)
    base = summary.tables["baseline"].set_index(["task", "metric"])
    assert base.loc[("depth", "abs_err"), "direction"].startswith("↓")
    assert set(base["run_id"]) == set(store["baselines"])  # named by the parent's mtsam.baseline_runs


def test_objective_tag_with_min_mode(tmp_path):
    store = populate_contract_store(
        tmp_path, objective="val/semantic/miou", mode="min", trivial_artifact=True
    )
    sweep = analysis.load_sweep(store["uri"], "contract")
    assert sweep.trivial == CONTRACT_TRIVIAL  # read from the parent's trivial.json
    assert (sweep.objective.column, sweep.objective.higher_is_better) == ("best/val/semantic/miou", False)
    picked = analysis.results_table(sweep.trials, by=())
    assert picked["trial"].tolist()[-1] == "C"  # lowest val miou among full-budget trials


def test_latest_sweep_experiment(store):
    from analysis.mlflow_source import latest_sweep_experiment

    assert latest_sweep_experiment(store["uri"]) == "contract"
