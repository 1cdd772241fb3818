"""Fractional GPUs, as Tune packs them: a real Ray cluster whose node declares one GPU
(``ray.cluster_utils.Cluster``; the GPU is Ray's bookkeeping, this machine has none) and trials
asking ``resources.gpu: 0.5``. Two trials share the GPU, a third waits although CPUs are free, and
each trial's MLflow run says which GPU it was given. A trial given a GPU that torch cannot see fails
with a ``resources.gpu`` error instead of silently training on the CPU."""

from __future__ import annotations

import json

import pytest
from conftest import INLINE_BASELINE as BASELINE
from conftest import ray_cluster, run_search
from mlflow import MlflowClient

NAME, SAMPLES, EPOCHS = "gpus", 4, 3


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpus")
    with ray_cluster(num_cpus=4, num_gpus=1) as cluster:
        cluster.wait_for_nodes()
        yield {"address": cluster.address, "tmp": tmp}


def _search(cluster, name: str, *extra: str):
    tmp = cluster["tmp"]
    args = [
        *f"--storage {tmp / 'runs'} --name {name} --address {cluster['address']}".split(),
        *f"--tracking-uri sqlite:///{tmp / 'mlflow.db'} --set scheduler.type=fifo".split(),
        "--set", "resources.cpu=1", "--set", "resources.gpu=0.5", "--set", "search.max_concurrent=4",
        "--set", f"base.baseline={json.dumps(BASELINE)}",
        *extra,
    ]  # fmt: skip
    return run_search(args)


def _intervals(exp_dir) -> list[tuple[float, float]]:
    spans = []
    for path in exp_dir.glob("trial_*/result.json"):
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        first, last = records[0], records[-1]
        spans.append((first["reported_at"] - first["time_total_s"], last["reported_at"]))
    return spans


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])  # ends sort first
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def test_half_gpu_trials_share_one_gpu_two_at_a_time(gpu_cluster):
    proc = _search(gpu_cluster, NAME, "--num-samples", str(SAMPLES), "--epochs", str(EPOCHS),
                   "--set", "base.train.device=cpu")  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    spans = _intervals(gpu_cluster["tmp"] / "runs" / NAME)
    assert len(spans) == SAMPLES
    # 4 CPUs would allow 4 trials: the single GPU, half per trial, allows 2.
    assert _most_at_once(spans) == 2
    client = MlflowClient(f"sqlite:///{gpu_cluster['tmp'] / 'mlflow.db'}")
    exp = client.get_experiment_by_name(NAME)
    runs = client.search_runs([exp.experiment_id], "tags.`mtsam.role` = 'trial'")
    assert len(runs) == SAMPLES and all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        tags = run.data.tags
        assert tags["mtsam.gpus"] == "0" and tags["mtsam.gpu_share"] == "0.5", tags
        assert tags["mtsam.device"] == "cpu", tags  # base.train.device=cpu: no memory cap to apply
        assert len(tags["mtsam.node_id"]) > 12


def test_a_gpu_trial_without_cuda_fails_instead_of_using_the_cpu(gpu_cluster):
    proc = _search(gpu_cluster, "no-cuda", "--num-samples", "1", "--epochs", "1", "--set", "max_failures=0")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-4000:]
    assert "resources.gpu: Ray gave this trial GPU 0" in out, out[-4000:]
    assert "torch sees no CUDA device" in out and "base.train.device=cpu" in out
