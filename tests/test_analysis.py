"""analysis/ on a real MLflow (sqlite) store written through the MLflow API with known runs.

Expected Δb values are worked out by hand from the gains listed in conftest_analysis.TRIALS:
task-averaged = 100·mean over tasks of the mean gain of the task, metric-averaged = 100·mean over
all 7 metrics; a gain is (N−B)/B, negated for lower-is-better metrics.
"""

from __future__ import annotations

import json
import math
import socket
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
from conftest_analysis import BASELINE, TEST_BASE, TRIALS, VAL_SCALE, populate_store

import analysis
from analysis.outdir import MANIFEST
from analysis.report import main as report_main

# (task-averaged, metric-averaged) Δb in %, test split
HAND_DELTA = {
    "t1": (100 * ((0.10 + 0.05) / 2 + (0.10 - 0.10) / 2 + (0.05 - 0.05 + 0.10) / 3) / 3, 100 * 0.25 / 7),
    "t2": (100 * ((0.04 + 0) / 2 + (0.02 + 0.02) / 2 + (0 + 0 + 0.03) / 3) / 3, 100 * 0.11 / 7),
    "t3": (100 * (0.03 / 2) / 3, 100 * 0.03 / 7),
    "t4": (100 * (-0.02 / 2) / 3, 100 * -0.02 / 7),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return populate_store(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture(scope="module")
def sweep(store):
    return analysis.load_sweep(store["uri"], store["experiment"])


def by_trial(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index("trial_id")


def test_one_row_per_trial_with_status_reason_and_counts(sweep, store):
    t = by_trial(sweep.trials)
    assert list(t.index) == ["t1", "t2", "t3", "t4", "t5"]  # the baseline run is not a trial
    assert t["status"].to_dict() == {
        "t1": "FINISHED",
        "t2": "FINISHED",
        "t3": "KILLED",
        "t4": "FINISHED",
        "t5": "FAILED",
    }
    assert t.loc["t3", "status_reason"] == "early stopped by ASHA at epoch 2"
    assert t.loc["t5", "status_reason"] == "RuntimeError: out of memory"
    assert pd.isna(t.loc["t1", "status_reason"])
    assert t["trainable_params"].tolist() == [3_000_000, 2_000_000, 3_000_000, 1_000_000, 500_000]
    assert t["epochs"].tolist() == [3, 3, 2, 3, 1]
    assert t["best_epoch"].tolist()[:4] == [2, 3, 2, 3] and pd.isna(t.loc["t5", "best_epoch"])
    assert t["ranks"].tolist() == ["32/32/4", "16/16/4", "32/32/4", "8", "8/8/2"]
    assert t.loc["t1", "run_id"] == store["run_ids"]["t1"]
    assert sweep.parent_run_id == store["parent_run_id"] and sweep.tags["mtsam.search_mode"] == "pareto"
    assert sweep.baseline == BASELINE and sweep.split == "test"


def test_hyperparameters_are_typed_columns(sweep):
    t = by_trial(sweep.trials)
    assert set(sweep.param_columns) >= {"adapter.ranks", "train.lr", "train.amp", "adapter.rank"}
    assert t["train.lr"].dtype == float and t.loc["t2", "train.lr"] == 0.0005
    assert t["train.epochs"].dtype == "int64"
    assert t["train.amp"].dtype == bool and t["train.amp"].tolist() == [False, False, True, False, False]
    assert t.loc["t1", "adapter.ranks"] == [32, 32, 4] and pd.isna(t.loc["t4", "adapter.ranks"])
    assert t.loc["t1", "adapter.targets"] == ["q", "k", "v"]
    assert str(t["adapter.rank"].dtype) == "Int64" and t.loc["t4", "adapter.rank"] == 8
    assert t["weighting.temperature"].dtype == float and t.loc["t3", "weighting.temperature"] == 2.0
    assert t["R1"].tolist()[:3] == [32, 16, 32] and pd.isna(t.loc["t4", "R1"])


def test_final_best_epoch_and_selected_test_metrics(sweep):
    t1 = by_trial(sweep.trials).loc["t1"]
    final = TRIALS[0]["test"]["semantic"]["miou"]
    assert t1["val/semantic/miou"] == pytest.approx(final * VAL_SCALE[3])  # last epoch
    assert t1["best/val/semantic/miou"] == pytest.approx(final)  # epoch 2 was selected
    assert t1["test/semantic/miou"] == pytest.approx(final)  # latest, not step 1's baseline values
    assert t1["test/delta_b_task"] == 42.0  # the logged value is kept under its own key


def test_history_has_one_row_per_trial_and_epoch(sweep):
    h = sweep.history
    assert len(h) == 3 + 3 + 2 + 3 + 1
    assert h.groupby("trial_id")["epoch"].apply(list).to_dict() == {
        "t1": [1, 2, 3],
        "t2": [1, 2, 3],
        "t3": [1, 2],
        "t4": [1, 2, 3],
        "t5": [1],
    }
    assert not h.duplicated(["run_id", "epoch"]).any()
    assert "model/trainable_params" not in h.columns  # step-0 counts are not epochs
    t1 = h[h["trial_id"] == "t1"].set_index("epoch")
    assert t1["train/loss/total"].tolist() == pytest.approx([1.0, 0.5, 1 / 3])
    assert t1["val/semantic/miou"].tolist() == pytest.approx([0.44 * VAL_SCALE[e] for e in (1, 2, 3)])


def test_delta_b_recomputed_from_raw_metrics(sweep):
    t = by_trial(sweep.trials)
    for trial, (task_avg, metric_avg) in HAND_DELTA.items():
        assert t.loc[trial, "delta_b_task"] == pytest.approx(task_avg), trial
        assert t.loc[trial, "delta_b_metric"] == pytest.approx(metric_avg), trial
    assert math.isnan(t.loc["t5", "delta_b_task"])  # failed before any test metric


def test_rebase_uses_mtsam_delta_b_and_other_baselines(sweep, monkeypatch):
    import mtsam.metrics

    calls = []
    real = mtsam.metrics.delta_b
    monkeypatch.setattr(mtsam.metrics, "delta_b", lambda *a: calls.append(a) or real(*a))
    # one split's {task: {metric: value}}: t1's miou becomes the baseline's (gain 0)
    rebased = sweep.rebase({**TEST_BASE, "semantic": {"miou": 0.44, "pix_acc": 0.80}})
    t1 = by_trial(rebased.trials).loc["t1"]
    assert t1["delta_b_task"] == pytest.approx(100 * ((0 + 0.05) / 2 + 0 + 0.10 / 3) / 3)
    assert t1["delta_b_metric"] == pytest.approx(100 * 0.15 / 7)
    assert len(calls) == 4  # one per trial with metrics
    assert rebased.baseline["directions"] == BASELINE["directions"]
    assert by_trial(sweep.trials).loc["t1", "delta_b_task"] == pytest.approx(HAND_DELTA["t1"][0])  # unchanged
    # val split: metrics at the selected epoch (2 for t1) against the val baseline (miou 0.55)
    val = by_trial(sweep.rebase(BASELINE, split="val").trials).loc["t1"]
    assert val["delta_b_task"] == pytest.approx(100 * ((-0.20 + 0.05) / 2 + 0 + 0.10 / 3) / 3)
    assert val["delta_b_metric"] == pytest.approx(100 * -0.05 / 7)
    assert "delta_b_task" not in sweep.rebase(None).trials.columns


def test_baseline_runs_are_separate_and_give_a_baseline(sweep):
    runs = sweep.baseline_runs
    assert runs["task"].tolist() == ["semantic"]
    built = analysis.baseline_from_runs(runs, directions=BASELINE["directions"])
    assert built["test"] == {"semantic": TEST_BASE["semantic"]}


def test_results_table_best_trial_per_group(sweep):
    table = analysis.results_table(sweep.trials, baseline=sweep.baseline)
    metric_headers = ["semantic miou ↑", "semantic pix_acc ↑", "depth abs_err ↓", "depth rel_err ↓"]
    metric_headers += ["normal mean ↓", "normal median ↓", "normal within_11.25 ↑"]
    expected = ["adapter", "weighting", "ranks", "trial", *metric_headers]
    assert list(table.columns) == [*expected, "Δb task (%) ↑", "Δb metric (%) ↑", "trainable params"]
    assert table.loc[0, "adapter"] == "single-task baseline" and table.loc[0, "semantic miou ↑"] == 0.40
    body = table.iloc[1:]
    assert body["trial"].tolist() == ["t1", "t2", "t3", "t4"]  # t5 failed; best Δb first
    assert body["Δb task (%) ↑"].tolist() == pytest.approx(
        [HAND_DELTA[t][0] for t in ("t1", "t2", "t3", "t4")]
    )
    assert body["depth abs_err ↓"].tolist() == pytest.approx([0.45, 0.49, 0.50, 0.50])
    assert body["trainable params"].tolist() == [3_000_000, 2_000_000, 3_000_000, 1_000_000]
    coarse = analysis.results_table(sweep.trials, by=("adapter", "weighting"))
    assert coarse["trial"].tolist() == ["t1", "t3", "t4"]  # t2 loses to t1 within (tora, equal)


def test_rank_sensitivity_and_weighting_comparison(sweep):
    ranks = analysis.rank_sensitivity(sweep.trials).set_index(["rank", "setting"])
    t1, t2, t3 = (HAND_DELTA[t][0] for t in ("t1", "t2", "t3"))
    assert ranks.loc[("R1", 32), "trials"] == 2 and ranks.loc[("R1", 32), "best"] == pytest.approx(t1)
    assert ranks.loc[("R1", 32), "mean"] == pytest.approx((t1 + t3) / 2)
    assert ranks.loc[("R1", 16), "best_trial"] == "t2" and ranks.loc[("R3", 4), "trials"] == 3
    assert ("R1", 8) not in ranks.index  # only the failed trial had R1 = 8
    w = analysis.weighting_comparison(sweep.trials).set_index("weighting")
    assert list(w.index) == ["equal", "dwa"]
    assert (
        w.loc["equal", "trials"] == 3
        and w.loc["equal", "finished"] == 3
        and w.loc["equal", "best_trial"] == "t1"
    )
    assert (
        w.loc["dwa", "trials"] == 1
        and w.loc["dwa", "finished"] == 0
        and w.loc["dwa", "best"] == pytest.approx(t3)
    )
    assert w.loc["equal", "mean"] == pytest.approx((t1 + t2 + HAND_DELTA["t4"][0]) / 3)


def test_pareto_front_is_exactly_the_non_dominated_trials(sweep):
    front = analysis.pareto_front(sweep.trials)
    # t3 (3M params, Δb 0.5) is dominated by t1 (3M, 3.6); t5 has no Δb
    assert front["trial_id"].tolist() == ["t4", "t2", "t1"]
    toy = pd.DataFrame(
        {"trial_id": list("abcdef"), "d": [1.0, 1.0, 2.0, 0.5, math.nan, 2.0], "p": [1, 1, 3, 2, 0, 4]}
    )
    mask = analysis.pareto_mask(toy, {"d": "max", "p": "min"})
    # a, b tie (both kept); c best d; d dominated by a; e incomplete; f dominated by c
    assert mask.tolist() == [True, True, True, False, False, False]


def test_load_by_parent_run_id(store):
    sweep = analysis.load_sweep(store["uri"], parent_run_id=store["parent_run_id"])
    assert sweep.name == "sweep" and len(sweep.trials) == 5
    with pytest.raises(analysis.AnalysisError, match="not found"):
        analysis.load_sweep(store["uri"], parent_run_id="0" * 32)


def test_report_cli_writes_its_files(store, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["--tracking-uri", store["uri"], "--experiment", "sweep", "--out", str(out)]
    assert report_main(argv) == 0
    names = {p.name for p in out.iterdir()}
    assert {"report.html", "trials.csv", "history.csv", "results.md", "results.tex", "results.csv"} <= names
    assert {"pareto.png", "learning_curves.png", "rank_sensitivity.png", "weighting.png"} <= names
    assert MANIFEST in names and set(json.loads((out / MANIFEST).read_text())["files"]) == names - {MANIFEST}
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no temp dirs left beside it
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "Δb task (%) ↑" in html and "t1" in html
    assert len(pd.read_csv(out / "history.csv")) == 12 and len(pd.read_csv(out / "trials.csv")) == 5
    assert "report written" in capsys.readouterr().out


def test_sweep_without_baseline_has_no_delta_b_and_says_so(store, tmp_path):
    sweep = analysis.load_sweep(store["uri"], "sweep-nobase")
    assert sweep.baseline is None and not sweep.has_delta_b
    assert not any(c.startswith("delta_b") for c in sweep.trials.columns)
    assert any("no baseline" in n for n in sweep.notes)
    assert analysis.primary_objective(sweep.trials) == ("test/semantic/miou", True)
    table = analysis.results_table(sweep.trials)
    assert table["trial"].tolist() == ["t1", "t2"] and not any("Δb" in c for c in table.columns)
    out = tmp_path / "nobase"
    assert (
        report_main(["--tracking-uri", store["uri"], "--experiment", "sweep-nobase", "--out", str(out)]) == 0
    )
    html = (out / "report.html").read_text()
    assert "no baseline" in html and "Δb task" not in html


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "case, expected",
    [
        ("unknown", "experiment 'nope' not found"),
        ("empty", "has no trial runs"),
        ("unreachable", "is unreachable"),
        ("no-db", "does not exist"),
        ("unwritable", "cannot be created"),
    ],
)
def test_report_errors_are_one_line_without_traceback(store, tmp_path, capfd, case, expected):
    uri, experiment, out = store["uri"], "sweep", tmp_path / "out"
    if case == "unknown":
        experiment = "nope"
    elif case == "empty":
        experiment = "sweep-empty"
    elif case == "unreachable":
        uri = f"http://127.0.0.1:{_closed_port()}"
    elif case == "no-db":
        uri = f"sqlite:///{tmp_path}/missing.db"
    else:
        (tmp_path / "file").write_text("")
        out = tmp_path / "file" / "out"
    capfd.readouterr()
    assert report_main(["--tracking-uri", uri, "--experiment", experiment, "--out", str(out)]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err, err
    assert "Traceback" not in err
    assert not out.exists() and not (tmp_path / "missing.db").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_notebooks_execute_headless(store, tmp_path):
    from analysis.notebooks import run_notebook

    # the Pareto notebook on the sweep without baseline: covers that path and spares a torch import;
    # both at once (one kernel each) as most of their time is kernel start-up and imports
    runs = {"sweep_summary": "sweep", "pareto": "sweep-nobase"}
    with ThreadPoolExecutor(len(runs)) as pool:
        futures = [
            pool.submit(run_notebook, name, tmp_path / name, tracking_uri=store["uri"], experiment=exp)
            for name, exp in runs.items()
        ]
        assert all(f.result().is_file() for f in futures)
    assert {"results.md", "weighting.png", "rank_sensitivity.png", "learning_curves.png"} <= {
        p.name for p in (tmp_path / "sweep_summary").iterdir()
    }
    assert (tmp_path / "pareto" / "pareto.png").stat().st_size > 1000
    front = pd.read_csv(tmp_path / "pareto" / "pareto.csv")
    assert front["trial_id"].tolist() == ["t2", "t1"]  # t1 (higher mIoU, more params) vs t2


def test_report_never_deletes_what_it_did_not_write(store, tmp_path, capfd):
    """A folder holding user files is refused untouched; in a report folder only the report's own
    files are replaced, planted files (and an mlflow.db) survive."""
    argv = ["--tracking-uri", store["uri"], "--experiment", "sweep", "--out"]
    project = tmp_path / "project"
    project.mkdir()
    (project / "mlflow.db").write_bytes(b"SQLite format 3\0user data")
    (project / "notes.txt").write_text("mine")
    capfd.readouterr()
    assert report_main([*argv, str(project)]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "not a report folder" in err, err
    assert sorted(p.name for p in project.iterdir()) == ["mlflow.db", "notes.txt"]

    out = tmp_path / "report"
    assert report_main([*argv, str(out)]) == 0
    (out / "planted.txt").write_text("keep me")
    (out / "mlflow.db").write_bytes(b"SQLite format 3\0user data")
    (out / "sub").mkdir()
    (out / "sub" / "x.csv").write_text("1")
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["files"].append("old-figure.png")  # a file an earlier version of the report wrote
    (out / MANIFEST).write_text(json.dumps(manifest))
    (out / "old-figure.png").write_bytes(b"png")
    (out / "report.html").write_text("stale")
    assert report_main([*argv, str(out)]) == 0
    assert (out / "planted.txt").read_text() == "keep me"
    assert (out / "mlflow.db").read_bytes().endswith(b"user data") and (out / "sub" / "x.csv").is_file()
    assert not (out / "old-figure.png").exists()  # the report's own stale file is gone
    assert "Sweep report" in (out / "report.html").read_text()  # replaced
    assert "planted.txt" not in json.loads((out / MANIFEST).read_text())["files"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project", "report"]
