"""A worker node of a real two-node ``ray.cluster_utils.Cluster`` is removed mid-sweep: the trial it
ran is rescheduled on the remaining node from its last checkpoint and every trial finishes."""

from __future__ import annotations

import json
import time

from conftest import kill_group, ray_cluster, start_search
from mlflow import MlflowClient

NAME, SAMPLES, EPOCHS = "node-loss", 2, 4


def _results_on(exp_path, node_id: str) -> list[dict]:
    found = []
    for path in exp_path.glob("*/result.json"):
        for line in path.read_text().splitlines():
            if line.strip() and json.loads(line).get("node_id") == node_id:
                found.append(json.loads(line))
    return found


def test_worker_node_removed_mid_sweep(tmp_path):
    proc = None
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with ray_cluster(num_cpus=1) as cluster:
        try:
            worker = cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            head_id = cluster.head_node.node_id
            args = (
                f"--storage {tmp_path / 'runs'} --name {NAME} --address {cluster.address} "
                f"--tracking-uri {uri} --num-samples {SAMPLES} --epochs {EPOCHS} --set scheduler.type=fifo "
                "--set baselines.mode=none --set max_failures=3"
            )
            log = tmp_path / "search.log"
            proc = start_search(args.split(), log=log)
            exp_path = tmp_path / "runs" / NAME
            deadline = time.monotonic() + 300
            while not _results_on(exp_path, worker.node_id):  # a trial has reported from the worker
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "no trial ran on the worker node"
                time.sleep(0.5)
            cluster.remove_node(worker)
            assert proc.wait(timeout=420) == 0, log.read_text()[-4000:]
        finally:
            if proc is not None:
                kill_group(proc)

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(NAME)
    runs = client.search_runs([exp.experiment_id], "tags.`mtsam.role` = 'trial'")
    assert len(runs) == SAMPLES and all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss/total")]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), steps  # each epoch once, none lost
    assert any(int(r.data.tags.get("mtsam.retries", 0)) >= 1 for r in runs)  # the moved trial
    # The moved trial's last epochs ran on the head node.
    last = [json.loads(p.read_text().splitlines()[-1]) for p in exp_path.glob("*/result.json")]
    assert all(r["node_id"] == head_id for r in last if r["epoch"] == EPOCHS) and len(last) == SAMPLES
