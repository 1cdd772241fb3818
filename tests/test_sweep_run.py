"""The shared tiny sweep end to end: MLflow runs, Optuna study, Ray directory, cached baselines,
and a second (multi-objective) sweep on the same store that reuses the baselines."""

from __future__ import annotations

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


def test_parent_and_nested_children(tiny_sweep):
    client, runs = _runs(tiny_sweep.tracking_uri, tiny_sweep.experiment)
    (parent,) = _role(runs, "sweep")
    tags = parent.data.tags
    assert parent.info.status == "FINISHED"
    assert (tags["mtsam.sweep"], tags["mtsam.dataset"], tags["mtsam.variant"]) == ("tiny", "scenes", "tiny")
    assert tags["mtsam.search_mode"] == "single" and tags["mtsam.git_commit"]
    assert tags["mtsam.config_file"].endswith("tune/configs/quickstart.yaml")
    children = [r for r in runs if r.data.tags.get(PARENT) == parent.info.run_id]
    assert len(children) == tiny_sweep.num_samples
    assert {r.data.tags[ROLE] for r in children} == {"trial"}
    assert len({r.data.tags["mtsam.trial_id"] for r in children}) == len(children)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    for run in children:
        assert NAME_PATTERN.fullmatch(run.info.run_name), run.info.run_name
        params = run.data.params
        assert json.loads(params["adapter.ranks"]) and params["adapter.type"] == "tora"
        assert params["weighting.method"] == run.data.tags["mtsam.weighting"]
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/delta_b_task")]
        assert steps == sorted(set(steps)) and steps[0] == 1
        for key in ("train/loss/total", "val/semantic/miou", "val/delta_b_metric", "train/lr", "best/epoch"):
            assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == steps, key
        assert [m.step for m in client.get_metric_history(run.info.run_id, "model/trainable_params")] == [0]
        assert "test/delta_b_task" in run.data.metrics
        if run.info.status == "KILLED":
            reason = run.data.tags["mtsam.status_reason"]
            assert reason == f"early-stopped by ASHA at epoch {steps[-1]}" and steps[-1] < tiny_sweep.epochs
        else:
            assert run.info.status == "FINISHED" and steps == list(range(1, tiny_sweep.epochs + 1))
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "baseline.json", "best", "trivial.json"} <= artifacts
    trivial = json.loads(Path(client.download_artifacts(parent.info.run_id, "trivial.json")).read_text())
    assert trivial["predictor"]["semantic"] == "majority class"
    for split in ("val", "test"):
        for task, metrics in trivial[split].items():
            for metric, value in metrics.items():
                assert parent.data.metrics[f"trivial/{split}/{task}/{metric}"] == pytest.approx(value)
    assert "trivial (constant predictors)" in tiny_sweep.stdout
    best = {a.path for a in client.list_artifacts(parent.info.run_id, "best")}
    assert best == {"best/adapter.pt", "best/config.yaml"}


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
    assert (first["adapter/ranks/r1"], first["adapter/ranks/r2"], first["adapter/ranks/r3"]) == (32, 32, 4)
    assert first["weighting/method"] == "fixed" and first["train/lr"] == pytest.approx(1e-3)
    assert all(t.state.name == "COMPLETE" for t in study.trials)


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
    assert "Pareto set (val/delta_b_task ↑, trainable params ↓)" in pareto_sweep.stdout
    client, runs = _runs(tiny_sweep.tracking_uri, "tiny-pareto")
    (parent,) = _role(runs, "sweep")
    assert parent.data.tags["mtsam.search_mode"] == "pareto"
    summary = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "summary.json", str(tmp_path))).read_text()
    )
    assert summary["pareto"] and set(summary["pareto"]) <= {t["trial_id"] for t in summary["trials"]}
    storage = study_storage(tiny_sweep.storage / "tiny-pareto" / "optuna.journal")
    study = optuna.load_study(study_name="tiny-pareto", storage=storage)
    assert len(study.directions) == 2 and study.best_trials
    children = [r for r in runs if r.data.tags.get(PARENT) == parent.info.run_id]
    assert len(children) == 3 and all(r.info.status == "FINISHED" for r in children)  # FIFO: no early stops
