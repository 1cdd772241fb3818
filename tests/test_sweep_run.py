"""The shared tiny sweep end to end: MLflow runs, Optuna study, Ray directory, cached baselines,
and a second (multi-objective) sweep on the same store that reuses the baselines."""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import optuna
import pytest
import torch
from conftest import REPO, run_search
from mlflow import MlflowClient

from mtsam.sweep.study import study_storage

PARENT, ROLE = "mlflow.parentRunId", "mtsam.role"
NAME_PATTERN = re.compile(r"tora-r\d+\.\d+\.\d+-(fixed|dwa)-lr[0-9.e-]+-\w{5}")


def _runs(uri: str, experiment: str | None = None):
    client = MlflowClient(uri)
    if experiment is None:
        ids = [e.experiment_id for e in client.search_experiments()]
    else:
        ids = [client.get_experiment_by_name(experiment).experiment_id]
    return client, client.search_runs(ids, max_results=1000)


def _role(runs, role):
    return [r for r in runs if r.data.tags.get(ROLE) == role]


def test_parent_and_nested_children(tiny_sweep, tmp_path):
    client, runs = _runs(tiny_sweep.tracking_uri, tiny_sweep.experiment)
    exp = client.get_experiment_by_name(tiny_sweep.experiment)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # MLflow 3 UI: runs table
    (parent,) = _role(runs, "sweep")
    tags = parent.data.tags
    assert parent.info.status == "FINISHED"
    assert (tags["mtsam.sweep"], tags["mtsam.dataset"], tags["mtsam.variant"]) == ("tiny", "scenes", "tiny")
    assert tags["mtsam.search_mode"] == "single" and tags["mtsam.git_commit"]
    assert tags["mtsam.config_file"].endswith("tune/configs/quickstart.yaml")
    assert (tags["mtsam.objective"], tags["mtsam.objective_mode"]) == ("val/delta_b_task", "max")
    assert tags["mtsam.objectives"] == "val/delta_b_task:max"
    assert (tags["mtsam.scheduler"], tags["mtsam.sampler"]) == ("ASHA", "TPE")
    note = tags["mlflow.note.content"]
    assert (
        "Searched: adapter.r1" in note and "Δb (%, task-averaged" in note and "Baseline: single-task" in note
    )
    assert tags["mtsam.baseline"].startswith("auto ") and "Result: best full-budget trial" in note
    assert "base.baseline" not in parent.data.params and parent.data.params["search.num_samples"] == "4"
    children = [r for r in runs if r.data.tags.get(PARENT) == parent.info.run_id]
    trials = [r for r in children if r.data.tags[ROLE] == "trial"]
    assert len(trials) == tiny_sweep.num_samples
    assert {r.data.tags[ROLE] for r in children} == {"trial", "baseline"}  # baselines grouped under it
    assert len({r.data.tags["mtsam.trial_id"] for r in trials}) == len(trials)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    outcomes = collections.Counter()
    for run in trials:
        assert NAME_PATTERN.fullmatch(run.info.run_name), run.info.run_name
        params, rtags = run.data.params, run.data.tags
        assert params["adapter.type"] == "tora" and int(params["adapter.r1"]) in (8, 16, 32)
        assert params["weighting.method"] == rtags["mtsam.weighting"]
        assert not [k for k in params if k.startswith(("faults.", "baseline")) or k == "adapter.ranks"]
        assert "None" not in params.values() and not [v for v in params.values() if "{" in v or "[" in v]
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/delta_b_task")]
        assert steps == list(range(1, len(steps) + 1))
        for key in ("train/loss/total", "val/semantic/miou", "val/delta_b_metric", "train/lr", "best/epoch"):
            assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == steps, key
        assert [m.step for m in client.get_metric_history(run.info.run_id, "model/trainable_params")] == [0]
        assert "test/delta_b_task" in run.data.metrics
        assert run.info.status == "FINISHED"  # an early stop is a result, not a crash
        assert (
            rtags["mtsam.epochs_planned"] == str(tiny_sweep.epochs) and rtags["mtsam.optuna_trial"].isdigit()
        )
        outcome = rtags["mtsam.outcome"]
        outcomes[outcome] += 1
        if outcome == "stopped_early":
            assert rtags["mtsam.stopped_at_epoch"] == str(steps[-1]) and steps[-1] < tiny_sweep.epochs
            assert (
                rtags["mlflow.note.content"] == f"stopped by ASHA at epoch {steps[-1]} of {tiny_sweep.epochs}"
            )
        else:
            assert outcome == "finished" and steps == list(range(1, tiny_sweep.epochs + 1))
        files = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "metrics.jsonl"} <= files
        local = client.download_artifacts(run.info.run_id, "metrics.jsonl", str(tmp_path / run.info.run_id))
        records = [json.loads(line) for line in Path(local).read_text().splitlines()]
        assert [r["epoch"] for r in records] == steps and "val/delta_b_task" in records[0]
        assert ("adapter" in files) == (outcome == "finished")  # log_adapters: top_k (5 ≥ trials)
    metrics = parent.data.metrics
    for outcome in ("finished", "stopped_early", "failed", "interrupted"):
        assert metrics[f"sweep/trials/{outcome}"] == outcomes.get(outcome, 0)
    finished = [r for r in trials if r.data.tags["mtsam.outcome"] == "finished"]
    best = max(
        finished,
        key=lambda r: max(m.value for m in client.get_metric_history(r.info.run_id, "val/delta_b_task")),
    )
    best_val = max(m.value for m in client.get_metric_history(best.info.run_id, "val/delta_b_task"))
    assert metrics["sweep/best/val/delta_b_task"] == pytest.approx(best_val)  # chosen by validation
    assert metrics["sweep/best/test/delta_b_task"] == pytest.approx(best.data.metrics["test/delta_b_task"])
    assert metrics["sweep/best/test/semantic/miou"] == pytest.approx(best.data.metrics["test/semantic/miou"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "baseline.json", "best", "trivial.json"} <= artifacts
    trivial = json.loads(Path(client.download_artifacts(parent.info.run_id, "trivial.json")).read_text())
    assert trivial["predictor"]["semantic"] == "majority class"
    for split in ("val", "test"):
        for task, values in trivial[split].items():
            for metric, value in values.items():
                assert metrics[f"trivial/{split}/{task}/{metric}"] == pytest.approx(value)
    assert "trivial (constant predictors)" in tiny_sweep.stdout
    assert "A new study created" not in tiny_sweep.stdout + tiny_sweep.stderr  # Optuna's INFO lines stay out
    best_files = {a.path for a in client.list_artifacts(parent.info.run_id, "best")}
    assert best_files == {"best/adapter.pt", "best/config.yaml"}


def test_baselines_are_tagged_runs(tiny_sweep, tmp_path):
    client, runs = _runs(tiny_sweep.tracking_uri, tiny_sweep.experiment)
    baselines = _role(runs, "baseline")
    assert sorted(r.data.tags["mtsam.task"] for r in baselines) == ["depth", "normal", "semantic"]
    assert len({r.data.tags["mtsam.baseline_key"] for r in baselines}) == 1
    (parent,) = _role(runs, "sweep")
    path = client.download_artifacts(parent.info.run_id, "baseline.json", str(tmp_path))
    baseline = json.loads(Path(path).read_text())
    assert set(baseline) == {"val", "test", "directions"}
    assert baseline["directions"]["depth"] == {"abs_err": False, "rel_err": False}
    assert set(baseline["test"]["normal"]) == {"mean", "median", "within_11.25", "within_22.5", "within_30"}


def test_optuna_study_holds_the_trials(tiny_sweep):
    study_path = tiny_sweep.exp_path / "optuna.journal"
    assert study_path.is_file() and not (tiny_sweep.exp_path / "optuna.db").exists()
    study = optuna.load_study(study_name="tiny", storage=study_storage(study_path))
    assert len(study.trials) == tiny_sweep.num_samples
    first = study.trials[0].params  # the paper's setting is evaluated first
    assert (first["adapter.r1"], first["adapter.r2"], first["adapter.r3"]) == (32, 32, 4)
    assert first["weighting.method"] == "fixed"
    assert 1.5e-3 <= first["train.lr"] <= 6e-3  # quickstart range: the paper's 1e-3 is left out
    assert study.metric_names == ["val/delta_b_task"]
    _, runs = _runs(tiny_sweep.tracking_uri, tiny_sweep.experiment)
    by_trial = {r.data.tags["mtsam.trial_id"]: r for r in _role(runs, "trial")}
    for trial in study.trials:  # only full-budget trials are results; early-stopped ones are PRUNED
        run = by_trial[trial.user_attrs["ray_trial_id"]]
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.data.tags["mtsam.optuna_trial"] == str(trial.number)
        expected = {"finished": "COMPLETE", "stopped_early": "PRUNED"}[run.data.tags["mtsam.outcome"]]
        assert trial.state.name == expected
        steps = [
            m.step
            for m in MlflowClient(tiny_sweep.tracking_uri).get_metric_history(
                run.info.run_id, "val/delta_b_task"
            )
        ]
        assert sorted(trial.intermediate_values) == steps  # every epoch reported, the stopping one too


def test_ray_directory_and_best_adapter(tiny_sweep):
    trial_dirs = sorted(tiny_sweep.exp_path.glob("trial_*"))
    assert len(trial_dirs) == tiny_sweep.num_samples
    pids = set()
    for folder in trial_dirs:
        params = json.loads((folder / "params.json").read_text())
        assert "ranks" in params["adapter"]  # nested sampled config
        records = [json.loads(line) for line in (folder / "result.json").read_text().splitlines()]
        assert [r["epoch"] for r in records] == list(range(1, len(records) + 1))
        assert all("val/delta_b_task" in r and "model/trainable_params" in r for r in records)
        assert all(r["timestamp"] - 1 <= r["reported_at"] <= r["timestamp"] + 1 for r in records)
        pids |= {r["pid"] for r in records}
        # keep_checkpoints: 1 leaves only the last epoch's folder; no TensorBoard files unless
        # `tensorboard: true`
        folders = sorted(p.name for p in folder.glob("checkpoint_*"))
        assert folders == [f"checkpoint_{len(records) - 1:06d}"], folders
        assert (folder / "progress.csv").is_file() and not list(folder.glob("events.out.tfevents*"))
    # Every stopped trial left its actor within Tune's reset timeout, so 2 processes ran all trials.
    assert len(pids) == 2
    adapter = tiny_sweep.exp_path / "best" / "adapter.pt"
    assert str(adapter) in tiny_sweep.stdout
    from mtsam.adapter_state import load_adapter

    model, extra = load_adapter(adapter)
    assert extra["epoch"] >= 1 and model(torch.rand(1, 3, 48, 64))["depth"].shape[-2:] == (48, 64)
    assert "mlflow ui --backend-store-uri sqlite:////" in tiny_sweep.stdout
    assert "python -m analysis.report --tracking-uri" in tiny_sweep.stdout


@pytest.fixture(scope="module")
def pareto_sweep(tiny_sweep):
    """A second sweep on the same store: multi-objective, same base run → baselines reused."""
    args = f"--config {REPO / 'tune/configs/pareto.yaml'} --storage {tiny_sweep.storage} --name tiny-pareto"
    proc = run_search([*args.split(), "--num-samples", 3, "--epochs", tiny_sweep.epochs])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def test_second_sweep_reuses_baselines(tiny_sweep, pareto_sweep):
    assert "baselines: reusing semantic, depth, normal" in pareto_sweep.stdout
    assert "baselines: training" not in pareto_sweep.stdout
    _, runs = _runs(tiny_sweep.tracking_uri)
    assert len(_role(runs, "baseline")) == 3  # across all experiments: nothing retrained
    parents = {r.data.tags["mtsam.sweep"]: r for r in _role(runs, "sweep")}
    used = {name: parent.data.tags["mtsam.baseline_runs"] for name, parent in parents.items()}
    assert used["tiny"] == used["tiny-pareto"]


def test_multi_objective_pareto_set(tiny_sweep, pareto_sweep, tmp_path):
    assert "Pareto set (val/delta_b_task ↑, train flops ↓)" in pareto_sweep.stdout
    assert "GFLOP/image" in pareto_sweep.stdout
    client, runs = _runs(tiny_sweep.tracking_uri, "tiny-pareto")
    (parent,) = _role(runs, "sweep")
    assert parent.data.tags["mtsam.search_mode"] == "pareto"
    summary = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "summary.json", str(tmp_path))).read_text()
    )
    assert parent.data.tags["mtsam.scheduler"] == "MO-ASHA"  # pareto.yaml's scheduler
    finished = {t["trial_id"] for t in summary["trials"] if t["outcome"] == "finished"}
    assert summary["pareto"] and set(summary["pareto"]) <= finished  # full-budget trials only
    storage = study_storage(tiny_sweep.storage / "tiny-pareto" / "optuna.journal")
    study = optuna.load_study(study_name="tiny-pareto", storage=storage)
    assert len(study.directions) == 2 and study.best_trials
    children = [r for r in runs if r.data.tags.get(PARENT) == parent.info.run_id]
    trials = [r for r in children if r.data.tags[ROLE] == "trial"]
    # a trial MO-ASHA stops at epoch 1 is FINISHED too, with mtsam.outcome=stopped_early
    assert len(trials) == 3 and all(r.info.status == "FINISHED" for r in trials)
    cost = "model/train_gflops_per_image"  # pareto.yaml: search.cost train_flops
    assert parent.data.tags["mtsam.objectives"] == f"val/delta_b_task:max,{cost}:min"
    assert study.metric_names == ["val/delta_b_task", cost]
    assert all(t.user_attrs["epoch_values"] for t in study.trials)
    # MO-ASHA ends a trial COMPLETE (its 2 epochs) or PRUNED (stopped at the rung, epoch 1); the first
    # trial at the rung always continues
    states = {t.state.name for t in study.trials}
    assert "COMPLETE" in states and states <= {"COMPLETE", "PRUNED"}
    outcomes = {r.data.tags["mtsam.optuna_trial"]: r.data.tags["mtsam.outcome"] for r in trials}
    expected = {"COMPLETE": "finished", "PRUNED": "stopped_early"}
    assert outcomes == {str(t.number): expected[t.state.name] for t in study.trials}
