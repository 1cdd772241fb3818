"""Multi-worker trials on a real two-node Ray cluster (``make dist-smoke``; minutes, so not in
``make test``, whose ``tests/test_distributed.py`` runs two 2-worker trials on one local node).

A sweep of two trials × 2 Ray Train workers (gloo, CPU) on a ``ray.cluster_utils.Cluster`` of two
nodes with 3 CPUs each. A worker takes 2 CPUs (``resources.cpu=2``), so no node holds two workers:
every trial's workers sit on both nodes (gloo across two raylets), one trial at a time (a trial
reserves 4.1 of the 6 CPUs). Once the first epoch is reported, one Ray Train worker process of this
cluster is SIGKILLed from outside (a real lost worker, not a raised exception): that trial fails,
Tune retries it from its last checkpoint (``max_failures``), and it completes. Checked from MLflow
and the Optuna study: one child run per trial (not per worker), each epoch logged once, the retry
recorded, both Optuna trials COMPLETE, each trial's workers on both nodes (``mtsam.*`` tags).

Not collected by ``make test`` (the file name is not ``test_*.py``); run by path:
``.venv/bin/python -m pytest -q -p no:cacheprovider tests/smoke/dist_smoke.py -s``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import optuna
from conftest import INLINE_BASELINE, kill_group, ray_cluster, start_search
from mlflow import MlflowClient

from mtsam.sweep.study import study_storage

# Epochs after the first take ~1.5 s here: 5 of them leave the kill a window of several seconds.
NAME, EPOCHS = "dist-smoke", 6


def _epochs_reported(exp_dir: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in exp_dir.glob("trial_*/result.json"))


def _parent(pid: int) -> int:
    # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after its ")"
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _descends_from(pid: int, ancestor: int) -> bool:
    try:
        while pid > 1:
            pid = _parent(pid)
            if pid == ancestor:
                return True
    except (OSError, ValueError, IndexError):
        pass
    return False


def _train_workers() -> list[int]:
    """Pids of this cluster's Ray Train worker processes (title ``ray::RayTrainWorker...``).
    Only descendants of this process (Cluster's raylets are its children): other Ray sessions on
    the machine may run Train workers too."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"ray::RayTrainWorker") and _descends_from(int(proc.name), os.getpid()):
            pids.append(int(proc.name))
    return sorted(pids)


def test_two_worker_trials_on_two_nodes_survive_a_killed_worker(tmp_path):
    storage, log = tmp_path / "runs", tmp_path / "sweep.log"
    started = time.monotonic()
    with ray_cluster(num_cpus=3) as cluster:
        cluster.add_node(num_cpus=3)
        cluster.wait_for_nodes()
        nodes = {node.node_id for node in cluster.list_all_nodes()}
        assert len(nodes) == 2
        args = (
            f"--storage {storage} --name {NAME} --address {cluster.address} --num-samples 2 "
            f"--epochs {EPOCHS} --set scheduler.type=fifo --set resources.workers=2 "
            "--set resources.cpu=2 --set base.data.batch_size=2 --set log_adapters=none "
            "--set max_failures=1"
        )
        proc = start_search([*args.split(), "--set", f"base.baseline={json.dumps(INLINE_BASELINE)}"], log=log)
        try:
            deadline = time.monotonic() + 420
            while _epochs_reported(storage / NAME) < 1:  # the first epoch is in: kill during the next
                assert proc.poll() is None, log.read_text()[-4000:]
                assert time.monotonic() < deadline, log.read_text()[-4000:]
                time.sleep(0.2)
            workers = _train_workers()
            assert len(workers) == 2, workers  # the running trial's two workers, nothing else
            os.kill(workers[-1], signal.SIGKILL)
            killed_at = time.monotonic()
            proc.wait(timeout=600)
        finally:
            kill_group(proc)
    out = log.read_text()
    done_at = time.monotonic()
    print(
        f"\ndist-smoke: worker killed after {killed_at - started:.0f} s, done after {done_at - started:.0f} s"
    )
    assert proc.returncode == 0, out[-4000:]
    assert "retry " in out, f"no retry (the trial ended before the kill?):\n{out[-4000:]}"
    # 6 CPUs hold one trial of 4.1
    assert "starting 2 trials (1 at a time, 2 workers each;" in out, out[-4000:]

    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    exp = client.get_experiment_by_name(NAME)
    runs = client.search_runs([exp.experiment_id], "tags.`mtsam.role` = 'trial'")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)  # per trial, not per worker
    retries = sorted(r.data.tags.get("mtsam.retries", "0") for r in runs)
    assert retries == ["0", "1"], retries
    retried = next(r for r in runs if "mtsam.retries" in r.data.tags)
    assert "Error:" in retried.data.tags["mtsam.last_error"], retried.data.tags  # an exception, named
    for run in runs:
        tags = run.data.tags
        assert tags["mtsam.outcome"] == "finished", tags
        assert run.data.metrics["model/workers"] == 2 and run.data.metrics["model/global_batch"] == 4
        # each trial's two workers on the two nodes (the retried one too: 2 CPUs per worker)
        assert tags["mtsam.workers"] == "2" and tags["mtsam.nodes"] == "2", tags
        assert set(tags["mtsam.node_id"].split(",")) == nodes, (tags["mtsam.node_id"], nodes)
        for key in ("train/loss/total", "val/delta_b_task"):
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
            assert steps == list(range(1, EPOCHS + 1)), (run.info.run_name, key, steps)  # each epoch once
    # Tune's results: each epoch once per trial, so the retry went on from the last checkpoint
    for result in (storage / NAME).glob("trial_*/result.json"):
        epochs = [json.loads(line)["epoch"] for line in result.read_text().splitlines() if line.strip()]
        assert epochs == list(range(1, EPOCHS + 1)), (result, epochs)
    study = optuna.load_study(study_name=NAME, storage=study_storage(storage / NAME / "optuna.journal"))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert all(sorted(t.intermediate_values) == list(range(1, EPOCHS + 1)) for t in study.trials)
