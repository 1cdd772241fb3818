"""Kill the sweep driver (SIGKILL) mid-sweep, then ``--resume``: the sweep completes, MLflow keeps
one child run per trial with each epoch once, nothing stays RUNNING, the Optuna study continues."""

from __future__ import annotations

import collections
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from conftest import kill_group, run_search, start_search
from mlflow import MlflowClient

from mtsam.errors import ConfigError
from mtsam.sweep.cli import main
from mtsam.sweep.driver_lock import DriverLock
from mtsam.sweep.study import study_storage
from mtsam.sweep.trainable import SCRATCH_PREFIX, remove_orphaned, scratch_dir

NAME, SAMPLES = "tiny-resume", 6  # with 4, all finished once in CI: no stop to keep across the kill


def _wait_for(log, text: str, count: int, proc, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if log.read_text().count(text) >= count:
            return
        assert proc.poll() is None, f"sweep ended before the kill:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)
    raise AssertionError(f"no {text!r} within {timeout}s:\n{log.read_text()[-3000:]}")


def test_kill_driver_then_resume(tiny_sweep, tmp_path, capsys):
    args = (
        f"--storage {tiny_sweep.storage} --name {NAME} --num-samples {SAMPLES} --epochs {tiny_sweep.epochs}"
    )
    # reduction 4: ASHA keeps only trials in the top quarter at epoch 1, so stops are (nearly) sure
    args = [*args.split(), "--set", "scheduler.reduction_factor=4"]
    log = tmp_path / "first.log"
    proc = start_search(args, log=log)
    try:
        _wait_for(log, "done ", 1, proc)
    finally:
        kill_group(proc)  # SIGKILL the driver and every process it started
        proc.wait()
    assert proc.returncode == -9

    # in-process: preflight errors need no Ray, and torch is imported already
    assert main([*map(str, args), "--epochs", "3", "--resume"]) == 2
    assert "differs from the stored one at base.train.epochs" in capsys.readouterr().err
    state_dir = tiny_sweep.storage / NAME
    with DriverLock(state_dir, NAME):  # as if the killed driver were still running
        assert main([*map(str, args), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is being run by another driver (pid " in err and len(err.splitlines()) == 1
    # a journal lock left by a driver killed mid-append: removed at once, not waited out (30 s)
    journal_lock = state_dir / "optuna.journal.lock"
    journal_lock.touch()
    # the killed trials' scratch folders (each with a training checkpoint) are left behind...
    orphaned, deadline = _scratch_folders(), time.monotonic() + 60
    while any(_alive(p) for p in orphaned) and time.monotonic() < deadline:
        time.sleep(0.2)  # Ray's workers outlive the killed driver for a moment
    assert orphaned and not any(_alive(p) for p in orphaned)

    resumed = run_search([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
    assert "resuming" in resumed.stdout and "baselines: reusing" in resumed.stdout
    assert "removed the Optuna journal's lock file" in resumed.stdout and not journal_lock.exists()
    assert not [p for p in orphaned if p.exists()]  # ...and removed by the next trials on the node

    client = MlflowClient(tiny_sweep.tracking_uri)
    exp = client.get_experiment_by_name(NAME)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    parents = [r for r in runs if r.data.tags.get("mtsam.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # the same parent, continued
    trials = [r for r in runs if r.data.tags.get("mtsam.role") == "trial"]
    counts = collections.Counter(r.data.tags["mtsam.trial_id"] for r in trials)
    assert len(counts) == SAMPLES and max(counts.values()) == 1  # no duplicated child runs
    journal = tiny_sweep.storage / NAME / "optuna.journal"
    study = optuna.load_study(study_name=NAME, storage=study_storage(journal))
    by_ray_id = {t.user_attrs.get("ray_trial_id"): t for t in study.trials}
    outcomes = collections.Counter()
    for run in trials:
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.info.status == "FINISHED"  # finished or stopped early, never left KILLED
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss/total")]
        assert steps == list(range(1, len(steps) + 1)), (run.info.run_name, steps)  # each epoch once
        # the study agrees across the kill: PRUNED with its intermediate values for an early stop,
        # COMPLETE only for a trial that ran its full budget
        outcome = run.data.tags["mtsam.outcome"]
        outcomes[outcome] += 1
        trial = by_ray_id[run.data.tags["mtsam.trial_id"]]
        assert trial.state.name == {"finished": "COMPLETE", "stopped_early": "PRUNED"}[outcome], outcome
        assert sorted(trial.intermediate_values) == steps
        assert (steps[-1] == tiny_sweep.epochs) == (outcome == "finished")
        assert run.data.tags["mtsam.optuna_trial"] == str(trial.number)
    assert outcomes["stopped_early"] >= 1 and outcomes["finished"] >= 1, outcomes
    drawn = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(drawn)) == len(drawn)  # the restored sampler did not repeat the first session's draws
    # a child the killed driver opened but Tune never recorded is closed and marked, not counted
    for run in runs:
        if run.data.tags.get("mtsam.role") == "orphan":
            assert run.info.status == "KILLED"

    states = collections.Counter(t.state.name for t in study.trials)
    assert states["COMPLETE"] + states["PRUNED"] >= SAMPLES and states["RUNNING"] == 0  # nothing dangling
    assert main([*map(str, args), "--resume"]) == 2
    assert "already finished" in capsys.readouterr().err


def _scratch_folders() -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}{socket.gethostname()}-*"))


def _alive(folder: Path) -> bool:
    return Path(f"/proc/{folder.name.split('-')[-2]}").exists()


def test_orphaned_trial_folders_are_removed_only_when_their_process_is_gone(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    folders = {
        "dead": tmp_path / f"{SCRATCH_PREFIX}{host}-{dead.pid}-ab12cd_3",
        "alive": tmp_path / f"{SCRATCH_PREFIX}{host}-{os.getpid()}-zz91ab_c",
        "other host": tmp_path / f"{SCRATCH_PREFIX}{host}-2-{dead.pid}-ab12cd_3",  # host "<host>-2"
        "not ours": tmp_path / f"mtsam-other-{host}-{dead.pid}-ab12cd_3",
    }
    for folder in folders.values():
        folder.mkdir()
        (folder / "checkpoint.pt").write_bytes(b"x" * 100)
    assert remove_orphaned(tmp_path) == [folders["dead"]]
    assert not folders["dead"].exists()
    assert all(folders[k].exists() for k in ("alive", "other host", "not ours"))
    mine = scratch_dir()
    try:
        assert mine.name.startswith(f"{SCRATCH_PREFIX}{host}-{os.getpid()}-")
        assert mine.parent == Path(tempfile.gettempdir())
        assert mine not in remove_orphaned()  # this process is alive
    finally:
        shutil.rmtree(mine)


def test_driver_lock_is_exclusive_and_released_when_its_driver_dies(tmp_path):
    first = DriverLock(tmp_path, "s")
    first.acquire()
    taken = rf"sweep 's' is being run by another driver \(pid {os.getpid()} on "
    with pytest.raises(ConfigError, match=taken):
        DriverLock(tmp_path, "s").acquire()
    first.release()
    with DriverLock(tmp_path, "s") as again:  # free again
        assert again.held
    code = (
        "import sys, time; from mtsam.sweep.driver_lock import DriverLock; "
        "DriverLock(sys.argv[1], 's').acquire(); print('held', flush=True); time.sleep(600)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:  # another process holds it, then dies by SIGKILL
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"pid {holder.pid} on "):
            DriverLock(tmp_path, "s").acquire()
    finally:
        holder.kill()
        holder.wait()
    with DriverLock(tmp_path, "s") as lock:  # the kernel released it with the process
        journal = tmp_path / "optuna.journal"
        (tmp_path / "optuna.journal.lock").touch()
        assert lock.clear_stale_journal_lock(journal) and not (tmp_path / "optuna.journal.lock").exists()
    (tmp_path / "optuna.journal.lock").touch()
    assert not lock.clear_stale_journal_lock(journal)  # never without holding the driver lock
    assert (tmp_path / "optuna.journal.lock").exists()


def test_refill_checkpoints_restores_folders_tune_deleted_after_its_last_snapshot(tmp_path):
    """Tune deletes an older checkpoint as soon as a newer one registers but saves its state only
    every ≥ 10 s: a driver killed in between points at a deleted folder. Resume refills it."""
    from mtsam.sweep.tuning import refill_checkpoints

    newest = tmp_path / "trial_a" / "checkpoint_000002"
    newest.mkdir(parents=True)
    (newest / "checkpoint.pt").write_bytes(b"epoch 3")
    (tmp_path / "trial_b").mkdir()  # no checkpoint yet: nothing to do
    created = refill_checkpoints(str(tmp_path))
    assert sorted(p.name for p in created) == ["checkpoint_000000", "checkpoint_000001"]
    assert (tmp_path / "trial_a" / "checkpoint_000000" / "checkpoint.pt").read_bytes() == b"epoch 3"
    assert refill_checkpoints(str(tmp_path)) == []  # nothing missing any more
    assert refill_checkpoints("s3://bucket/sweep") == []


def test_a_trial_tune_ended_during_the_kill_gets_its_undelivered_epochs(tmp_path):
    """The driver was killed after Tune recorded a trial's last epoch and end (result.json and the
    experiment state), before the tracker's backlog reached MLflow: the resumed sweep settles the
    run with that epoch logged, so MLflow has every epoch the Optuna study has."""
    from mtsam.sweep import tracking as tr

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("settle")
    parent = client.create_run(exp, tags={tr.ROLE: "sweep"}).info.run_id
    tags = {tr.PARENT: parent, tr.ROLE: "trial", tr.TRIAL_ID: "t1", tr.EPOCHS_PLANNED: "4"}
    run = client.create_run(exp, tags=tags).info.run_id
    records = [
        {"epoch": e, "reported_at": 1.7e9 + e, "train/loss/total": 1 / e, "val/delta_b_task": -10.0 * e}
        | {"model/trainable_params": 1234}
        for e in (1, 2)
    ]
    client.log_metric(run, "train/loss/total", 1.0, step=1)  # epoch 1 reached MLflow, epoch 2 did not
    trial_dir = tmp_path / "trial_t1"
    trial_dir.mkdir()
    lines = [json.dumps(r) + "\n" for r in records]
    (trial_dir / "result.json").write_text("".join(lines) + '{"epoch": 3, "tr')  # a line cut by the kill
    row = {"trial_id": "t1", "outcome": "stopped_early", "epochs": 2, "path": str(trial_dir)}
    row["optuna_trial"] = 5

    assert tr.settle_trial_runs(client, exp, parent, [row], 4, "ASHA") == 1
    got = client.get_run(run)
    assert got.info.status == "FINISHED" and got.data.tags[tr.OUTCOME] == "stopped_early"
    assert got.data.tags[tr.STOPPED_AT] == "2" and got.data.tags[tr.OPTUNA_TRIAL] == "5"
    steps = sorted(m.step for m in client.get_metric_history(run, "train/loss/total"))
    assert steps == [1, 2]  # epoch 1 not logged twice, epoch 2 recovered
    assert [m.step for m in client.get_metric_history(run, "val/delta_b_task")] == [2]
    assert client.get_metric_history(run, "model/trainable_params")[0].step == 0
    jsonl = Path(client.download_artifacts(run, "metrics.jsonl", str(tmp_path))).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in jsonl] == [1, 2]
    assert tr.settle_trial_runs(client, exp, parent, [row], 4, "ASHA") == 0  # nothing left to settle
    assert len(client.get_metric_history(run, "train/loss/total")) == 2


def test_epochs_that_never_reached_an_ended_run_are_logged_at_the_end(tmp_path):
    """A trial the tracker ended while the store was down for the last epochs' updates (kept, then
    given up after flush_timeout_s): once the store answers, the sweep's end logs those epochs."""
    from mtsam.sweep import tracking as tr

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("gap")
    parent = client.create_run(exp, tags={tr.ROLE: "sweep"}).info.run_id
    tags = {tr.PARENT: parent, tr.ROLE: "trial", tr.TRIAL_ID: "t2", tr.EPOCHS_PLANNED: "3"}
    run = client.create_run(exp, tags=tags).info.run_id
    client.log_metric(run, "train/loss/total", 1.0, step=1)
    client.set_terminated(run, "FINISHED")
    trial_dir = tmp_path / "trial_t2"
    trial_dir.mkdir()
    lines = [json.dumps({"epoch": e, "reported_at": 1.7e9 + e, "train/loss/total": 1 / e}) for e in (1, 2, 3)]
    (trial_dir / "result.json").write_text("\n".join(lines) + "\n")
    row = {"trial_id": "t2", "outcome": "finished", "epochs": 3, "path": str(trial_dir)}
    assert tr.settle_trial_runs(client, exp, parent, [row], 3, "ASHA") == 1
    assert sorted(m.step for m in client.get_metric_history(run, "train/loss/total")) == [1, 2, 3]
    assert client.get_run(run).info.status == "FINISHED"


def test_a_trial_ends_at_the_last_epoch_its_records_hold():
    """Tune's last result lags behind a killed driver; the records (result.json, checkpoint) do not."""
    from mtsam.sweep.tracking import final_outcome, outcome_tags

    epochs = {e: {} for e in (1, 2)}
    assert final_outcome("stopped_early", 1, epochs, 3) == ("stopped_early", 2)
    assert final_outcome("stopped_early", 2, {**epochs, 3: {}}, 3) == ("finished", 3)
    assert final_outcome("failed", 1, epochs, 3) == ("failed", 1)
    assert final_outcome("finished", 3, {}, 3) == ("finished", 3)
    tags = outcome_tags("stopped_early", 2, 3, "ASHA", with_configuration=True)
    assert tags["mlflow.note.content"] == tags["mtsam.status_reason"]
    note = "stopped at epoch 2 of 3 with its configuration (another seed was stopped by ASHA)"
    assert tags["mlflow.note.content"] == note
