"""Trivial predictors: constants from training statistics, scored with the pooled meters; written
by the trainer (trivial.json), printed by mtsam.train, logged on a sweep's parent run."""

import json

import pytest
import torch
from mlflow import MlflowClient

from mtsam import factory
from mtsam.config import load_config
from mtsam.trainer import Trainer
from mtsam.trivial import TRIVIAL_FILE, fit_constants, flat_metrics, trivial_predictors

SMALL = [
    "data.scenes.train=8",
    "data.scenes.val=3",
    "data.val_fraction=0.25",
    "data.scenes.height=24",
    "data.scenes.width=32",
    "model.image_size=32",
    "train.epochs=1",
]


def _splits(config):
    return factory.build_datasets(config), factory.tasks_for(config)


def test_constants_are_the_training_statistics():
    config = load_config(overrides=SMALL)
    (train, _, _), tasks = _splits(config)
    constants = fit_constants(train, tasks)
    train.augment = False
    samples = [train[i] for i in range(len(train))]
    labels = torch.cat([s["semantic"].flatten() for s in samples])
    assert int(constants["semantic"]) == int(torch.bincount(labels[labels >= 0]).argmax())
    depth = torch.cat([s["depth"].flatten() for s in samples])
    assert float(constants["depth"][0]) == pytest.approx(float(depth[depth > 0].double().mean()), rel=1e-9)
    normals = torch.cat([s["normal"].flatten(1) for s in samples], dim=1).double()
    mean = normals[:, (normals != 0).any(0)].mean(1)
    assert torch.allclose(constants["normal"], mean / mean.norm())
    assert float(constants["normal"].norm()) == pytest.approx(1.0)


def test_scored_with_the_pooled_meters():
    config = load_config(overrides=SMALL)
    (train, val, test), tasks = _splits(config)
    result = trivial_predictors(train, val, test, tasks)
    names = {"semantic": "majority class", "depth": "mean depth", "normal": "mean normal"}
    assert result["predictor"] == names
    constants = fit_constants(train, tasks)
    meter = tasks["normal"].meter()
    for i in range(len(val)):  # the same constant as a full prediction map, batch of one
        target = val[i]["normal"][None]
        meter.update(constants["normal"].float().view(1, 3, 1, 1).expand_as(target).clone(), target)
    assert result["val"]["normal"] == pytest.approx(meter.compute())
    assert set(result["test"]["semantic"]) == set(tasks["semantic"].metrics)
    # the majority class is right on its own pixels only: pixel accuracy = its share, mIoU ≪ 1
    assert 0 < result["val"]["semantic"]["miou"] < result["val"]["semantic"]["pix_acc"] < 1
    flat = flat_metrics(result)
    assert flat["trivial/test/depth/abs_err"] == result["test"]["depth"]["abs_err"]
    assert len(flat) == 2 * sum(len(t.metrics) for t in tasks.values())


def test_trainer_writes_trivial_json_and_the_cli_prints_it_once(tmp_path, capsys):
    from mtsam.train import main

    assert main(["--out", str(tmp_path / "run"), "--epochs", "2", *[f"--set={o}" for o in SMALL[:-1]]]) == 0
    out = capsys.readouterr().out
    assert out.count("trivial (majority class)") == 2  # val before training + test in the summary
    written = json.loads((tmp_path / "run" / TRIVIAL_FILE).read_text())
    assert set(written) == {"val", "test", "predictor"}
    trainer = Trainer(load_config(overrides=SMALL), tmp_path / "again")
    assert trainer.fit()["trivial"] == written


def test_sweep_logs_the_trivial_row_on_the_parent(tmp_path):
    from mtsam.config import config_to_dict
    from mtsam.sweep.trivial_ref import log_trivial

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("t", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(exp).info.run_id
    base = config_to_dict(load_config(overrides=SMALL))
    lines = []
    result = log_trivial(client, run_id, base, lines.append)
    log_trivial(client, run_id, base)  # a resumed sweep: nothing logged twice
    metrics = client.get_run(run_id).data.metrics
    assert metrics == pytest.approx(flat_metrics(result))
    assert len(client.get_metric_history(run_id, "trivial/val/semantic/miou")) == 1
    assert json.loads((tmp_path / "artifacts" / run_id / "artifacts" / TRIVIAL_FILE).read_text()) == result
    assert lines and lines[0].startswith("trivial predictors (val): semantic miou")
