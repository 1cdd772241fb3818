"""The multi-node setup in small: a real two-node Ray cluster (``ray.cluster_utils.Cluster``) joined
with ``--address``, tracked on a real ``mlflow server`` bound to 127.0.0.1, the baseline given
inline, and one trial crashing once (injected fault) and retried from its checkpoint."""

from __future__ import annotations

import json

import pytest
from conftest import INLINE_BASELINE as BASELINE
from conftest import mlflow_server, ray_cluster, run_search
from mlflow import MlflowClient

NAME, EPOCHS = "cluster", 2


@pytest.fixture(scope="module")
def cluster_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    marker = tmp / "crashed-once"
    with mlflow_server(tmp / "mlflow") as uri:
        with ray_cluster(num_cpus=1) as cluster:
            cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            node_ids = {node.node_id for node in cluster.list_all_nodes()}
            args = (
                f"--storage {tmp / 'runs'} --name {NAME} --address {cluster.address} --tracking-uri {uri} "
                f"--num-samples 2 --epochs {EPOCHS} --set scheduler.type=fifo "
                f"--set base.faults.crash_at_epoch=2 --set base.faults.crash_marker={marker}"
            )
            proc = run_search([*args.split(), "--set", f"base.baseline={json.dumps(BASELINE)}"])
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        yield {"proc": proc, "nodes": node_ids, "marker": marker, "tmp": tmp, "uri": uri}


def _trial_runs(sweep):
    client = MlflowClient(sweep["uri"])
    exp = client.get_experiment_by_name(NAME)
    return client, client.search_runs([exp.experiment_id], "tags.`mtsam.role` = 'trial'")


def test_trials_run_on_both_nodes(cluster_sweep):
    assert len(cluster_sweep["nodes"]) == 2
    seen = set()
    for folder in (cluster_sweep["tmp"] / "runs" / NAME).glob("trial_*"):
        for line in (folder / "result.json").read_text().splitlines():
            seen.add(json.loads(line)["node_id"])
    assert seen == cluster_sweep["nodes"]  # 1 CPU per node, 2 concurrent trials: one on each node


def test_crashed_trial_is_retried_from_its_checkpoint(cluster_sweep):
    stdout = cluster_sweep["proc"].stdout
    assert cluster_sweep["marker"].is_file()  # the fault fired (once)
    assert "retry " in stdout and "InjectedCrash: injected crash at epoch 2" in stdout
    client, runs = _trial_runs(cluster_sweep)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    (retried,) = [r for r in runs if r.data.tags.get("mtsam.retries") == "1"]
    assert "InjectedCrash" in retried.data.tags["mtsam.last_error"]
    for run in runs:  # each epoch exactly once, also for the retried trial
        for key in ("train/loss/total", "val/delta_b_task"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert steps == list(range(1, EPOCHS + 1)), (run.info.run_name, key, steps)
    # it resumed from its epoch-1 checkpoint: Tune's record of it has each epoch once
    trial_dir = cluster_sweep["tmp"] / "runs" / NAME / f"trial_{retried.data.tags['mtsam.trial_id']}"
    epochs = [json.loads(line)["epoch"] for line in (trial_dir / "result.json").read_text().splitlines()]
    assert epochs == list(range(1, EPOCHS + 1))


def test_tracked_on_the_mlflow_server(cluster_sweep):
    stdout, uri, tmp = cluster_sweep["proc"].stdout, cluster_sweep["uri"], cluster_sweep["tmp"]
    assert "baselines: given in the config" in stdout and f"open {uri}" in stdout
    assert not (tmp / "runs" / "mlflow.db").exists()  # everything went to the server
    client, runs = _trial_runs(cluster_sweep)
    assert all("val/delta_b_task" in r.data.metrics for r in runs)
    (parent,) = client.search_runs([runs[0].info.experiment_id], "tags.`mtsam.role` = 'sweep'")
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    best = {a.path for a in client.list_artifacts(parent.info.run_id, "best")}
    assert best == {"best/adapter.pt", "best/config.yaml"}
    assert list((tmp / "mlflow" / "artifacts").rglob("adapter.pt"))  # stored by the server, not the client
