"""Data-parallel trials (issue 19): N gloo workers equal one process with N× the batch, pooled
metrics equal a single-process evaluation, checkpoints move between worker counts, and a sweep of
2-worker trials on a real local Ray logs one MLflow child run per trial. Ray Train's start-up
(~20-25 s per run on 2 cores) dominates the file's time: the 2-worker jobs without Ray share one
set of processes."""

from __future__ import annotations

import math

import pytest

from mtsam.config import load_config
from mtsam.trainer import CHECKPOINT, Trainer, read_checkpoint
from tests.dist_helpers import run_jobs

BASE = [
    "data.scenes.train=12",
    "data.scenes.val=4",
    "data.val_fraction=0.25",
    "data.scenes.height=32",
    "data.scenes.width=48",
    "model.image_size=64",
    "adapter.dropout=0",  # dropout draws differ per worker: off, so the runs can match
    "train.epochs=2",
]
# One process sees the 4 images the two workers see together (2 each) at every step.
ONE = [*BASE, "data.batch_size=4"]
TWO = [*BASE, "data.batch_size=2"]
# Losses are means over a batch's valid pixels; two workers average two per-image means (as DDP
# does), so curves agree closely but not bit for bit when images have different valid areas.
LOSS_RTOL = 2e-2


def losses(history: list[dict]) -> list[float]:
    return [r[k] for r in history for k in sorted(r) if k.startswith("train/loss/")]


def close(a: list[float], b: list[float], rtol: float) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=rtol, abs_tol=1e-6) for x, y in zip(a, b))


MGDA = ["weighting.method=mgda"]  # combines per-task gradients nonlinearly


def stop_after_epoch_1(record, trainer):
    trainer.stop = True


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The one-process runs, then every 2-worker job in one set of 2 processes (one start-up)."""
    tmp = tmp_path_factory.mktemp("dist")
    one = {
        "single": Trainer(load_config(overrides=ONE), tmp / "single"),
        "stopped": Trainer(load_config(overrides=ONE), tmp / "stopped", callbacks=[stop_after_epoch_1]),
        "mgda": Trainer(load_config(overrides=[*ONE, *MGDA]), tmp / "mgda"),
    }
    for trainer in one.values():
        trainer.fit()
    jobs = {
        "two": {"overrides": TWO, "extra": ["eval"]},
        "two_stopped": {"overrides": TWO, "extra": ["stop1"]},
        "back": {"overrides": TWO, "resume": str(tmp / "stopped")},
        "two_mgda": {"overrides": [*TWO, *MGDA]},
    }
    results = run_jobs(2, [{**job, "out": tmp / name} for name, job in jobs.items()])
    return {"tmp": tmp, **one, **dict(zip(jobs, results))}


def test_two_workers_match_one_process_with_twice_the_batch(runs, tmp_path):
    out, single, tmp = runs["two"], runs["single"], runs["tmp"]
    assert out["summary"]["workers"] == 2 and out["summary"]["global_batch"] == 4
    assert single.summary()["workers"] == 1 and single.summary()["global_batch"] == 4
    assert [r["epoch"] for r in out["history"]] == [1, 2]
    assert close(losses(out["history"]), losses(single.history), LOSS_RTOL), (
        losses(out["history"]),
        losses(single.history),
    )
    # Pooled metrics of the 2 workers == one process evaluating the same weights on the whole split.
    alone = Trainer(load_config(overrides=ONE), tmp_path / "alone", resume_from=tmp / "two" / "rank0")
    for split in ("val", "test"):
        pooled, whole = out["evals"][split], alone.evaluate(split)
        assert pooled.keys() == whole.keys()
        for key in whole:
            assert math.isclose(pooled[key], whole[key], rel_tol=1e-5, abs_tol=1e-7), key
    # Only rank 0 wrote files.
    assert (tmp / "two" / "rank0" / CHECKPOINT).is_file()
    assert not (tmp / "two" / "rank1").exists() or not any((tmp / "two" / "rank1").iterdir())


def test_checkpoints_move_between_worker_counts(runs, tmp_path):
    # 2 workers trained epoch 1 and stopped; one process resumes and trains epoch 2
    tmp, single = runs["tmp"], runs["single"]
    assert [r["epoch"] for r in runs["two_stopped"]["history"]] == [1]
    assert read_checkpoint(tmp / "two_stopped" / "rank0" / CHECKPOINT)["epoch"] == 1
    resumed = Trainer(load_config(overrides=ONE), tmp_path, resume_from=tmp / "two_stopped" / "rank0")
    resumed.fit()
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert close(losses(resumed.history), losses(single.history), LOSS_RTOL)
    # and back: one process trained epoch 1, two workers resumed it
    back = runs["back"]
    assert [r["epoch"] for r in back["history"]] == [1, 2]
    assert back["history"][0] == runs["stopped"].history[0]  # from the checkpoint, as it was
    assert close(losses(back["history"]), losses(single.history), LOSS_RTOL)


def test_gradient_weighting_sees_all_reduced_gradients(runs):
    # the pooled per-task gradients give the 1-process result (each worker's own would not)
    two, one = runs["two_mgda"], runs["mgda"]
    assert close(losses(two["history"]), losses(one.history), LOSS_RTOL)
    weights = [r[k] for r in two["history"] for k in sorted(r) if k.startswith("train/weight/")]
    ref = [r[k] for r in one.history for k in sorted(r) if k.startswith("train/weight/")]
    assert len(weights) == len(ref) == 6
    assert all(abs(a - b) < 0.05 for a, b in zip(weights, ref)), (weights, ref)


def test_workers_config_dry_run_and_placement_checks():
    from mtsam.errors import ConfigError
    from mtsam.sweep.config import load_sweep_config
    from mtsam.sweep.describe import describe_plan
    from mtsam.sweep.plan import make_plan
    from mtsam.sweep.workers import check_fits, trials_that_fit

    with pytest.raises(ConfigError, match=r"^resources.workers: Input should be greater than or equal to 1"):
        load_sweep_config(None, ["resources.workers=0"])
    with pytest.raises(ConfigError, match=r"^resources.workers: 2 data-parallel workers need whole GPUs"):
        load_sweep_config(None, ["resources.workers=2", "resources.gpu=0.5"])
    plan = make_plan(
        *load_sweep_config(None, ["resources.workers=4", "ray.num_cpus=9", "base.data.batch_size=1"])
    )
    text = describe_plan(plan)
    assert "4 workers per trial (Ray Train, gloo), 1 CPU, no GPU per worker" in text
    assert "a trial reserves 4.1 CPU and 0 GPU together" in text
    assert "global batch 4 = batch_size 1 × 4 workers × grad_accum 1" in text
    assert "the local Ray (9 CPUs) runs 2 such trials at a time" in text
    # max_concurrent counts a trial's workers: lowered to what the cluster holds, refused below one
    assert trials_that_fit({"CPU": 8.0}, 4, 1.0, 0.0) == 1
    assert trials_that_fit({"CPU": 64.0, "GPU": 8.0}, 4, 1.0, 1.0) == 2
    assert check_fits(plan, {"CPU": 9.0}) == 2 and check_fits(plan, {"CPU": 5.0}) == 1
    with pytest.raises(ConfigError, match=r"^resources.workers: one trial of 4 workers needs 4.1 CPUs"):
        check_fits(plan, {"CPU": 4.0})


def test_sweep_of_two_worker_trials(tmp_path):
    """Two 2-worker trials at once (Ray Train inside the Tune trials) on a real local Ray: one MLflow
    child run per trial (not per worker), each epoch once, the Optuna study consistent. (On a
    two-node ``Cluster``, with a worker crashing at epoch 2 and the trial retried, this passed too,
    in ~180 s: over this file's time budget, so not kept here.)"""
    import json

    from conftest import INLINE_BASELINE, run_search
    from mlflow import MlflowClient

    args = (
        f"--storage {tmp_path / 'runs'} --name dp --set ray.num_cpus=5 "
        "--num-samples 2 --epochs 2 --set scheduler.type=fifo --set resources.workers=2 "
        "--set base.data.batch_size=2 --set log_adapters=none"
    )
    proc = run_search([*args.split(), "--set", f"base.baseline={json.dumps(INLINE_BASELINE)}"])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "(2 at a time, 2 workers each)" in proc.stdout  # 5 CPUs hold two trials of 2.1

    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("dp")
    runs = client.search_runs([exp.experiment_id], "tags.`mtsam.role` = 'trial'")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)  # per trial, not per worker
    for run in runs:
        assert run.data.metrics["model/workers"] == 2 and run.data.metrics["model/global_batch"] == 4
        assert run.data.tags["mtsam.workers"] == "2"
        assert len(run.data.tags["mtsam.node_id"].split(",")) == 1  # one local node
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss/total")]
        assert steps == [1, 2], steps  # each epoch once
    # the Optuna study agrees: two complete trials
    import optuna

    from mtsam.sweep.study import study_storage

    study = optuna.load_study(
        study_name="dp", storage=study_storage(tmp_path / "runs" / "dp" / "optuna.journal")
    )
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
