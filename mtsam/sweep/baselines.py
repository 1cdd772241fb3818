"""Single-task baselines for Δb: trained once per key, cached as MLflow runs, reused by later sweeps.

The key hashes everything that changes a single-task result (dataset, variant, image size, epochs,
seeds, adapter, optimiser, ...) except the task list; each task is one run tagged
``mtsam.role=baseline``, ``mtsam.baseline_key`` and ``mtsam.task``, whose selected-epoch val/test
metrics sit in the tag ``mtsam.baseline_result`` (JSON). Missing tasks train in parallel as Ray tasks.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from typing import Any

from mtsam.config import config_to_dict, validate_config
from mtsam.errors import MTSAMError

from . import tracking as tr
from .params import run_params

KEY_TAG, TASK_TAG, RESULT_TAG = "mtsam.baseline_key", "mtsam.task", "mtsam.baseline_result"


def template(base: dict, adapter: dict | None) -> dict:
    """The single-task run config (tasks left to fill in): no weighting, no faults, no baseline."""
    cfg = copy.deepcopy(base)
    if adapter is not None:
        cfg["adapter"] = copy.deepcopy(adapter)
    cfg["weighting"] = {"method": "ew"}  # one task: weighting is moot (and fixed's weights would not fit)
    cfg["baseline"] = None
    cfg["faults"] = {}
    cfg["train"]["select_metric"] = None  # the task's first metric
    return config_to_dict(validate_config(cfg))


def baseline_key(tmpl: dict) -> str:
    data = copy.deepcopy(tmpl)
    data["data"].pop("tasks", None)
    data.pop("faults", None)
    data["train"].pop("activation_checkpointing", None)  # same results either way
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def task_config(tmpl: dict, task: str) -> dict:
    cfg = copy.deepcopy(tmpl)
    cfg["data"]["tasks"] = [task]
    return cfg


def find_cached(client, key: str, tasks: list[str]) -> dict[str, Any]:
    """task → the newest finished baseline run with ``key``, searched across all experiments."""
    exp_ids = [e.experiment_id for e in client.search_experiments()]
    if not exp_ids:
        return {}
    runs = client.search_runs(
        exp_ids,
        f"tags.`{tr.ROLE}` = 'baseline' and tags.`{KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'",
        max_results=1000,
        order_by=["attributes.start_time DESC"],
    )
    found: dict[str, Any] = {}
    for run in runs:
        task = run.data.tags.get(TASK_TAG)
        if task in tasks and task not in found and RESULT_TAG in run.data.tags:
            found[task] = run
    return found


def _train_single(cfg: dict) -> dict:
    """Runs inside a Ray task: one single-task training run in a scratch folder."""
    import tempfile

    from mtsam.trainer import Trainer

    with tempfile.TemporaryDirectory(prefix="mtsam-baseline-") as tmp:
        trainer = Trainer(validate_config(cfg), tmp)
        summary = trainer.fit()
        return {"history": trainer.history, "best": summary["best"], "parameters": summary["parameters"]}


def train(configs: dict[str, dict], cpu: float, gpu: float) -> dict[str, dict]:
    """task → trainer output, all tasks in parallel on the Ray cluster."""
    import ray

    remote = ray.remote(num_cpus=cpu, num_gpus=gpu, max_retries=1)(_train_single)
    refs = {task: remote.remote(cfg) for task, cfg in configs.items()}
    out = {}
    for task, ref in refs.items():
        try:
            out[task] = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # one line naming the task, not Ray's wrapper
            raise MTSAMError(f"baseline for task {task} failed: {tr.error_reason(str(exc))}") from None
    return out


def log_run(
    client,
    experiment_id: str,
    key: str,
    task: str,
    cfg: dict,
    out: dict,
    sweep: str,
    parent_run_id: str | None,
) -> Any:
    best = out["best"] or {}
    result = {
        "epoch": best.get("epoch"),
        "val": {k.split("/")[2]: v for k, v in best.get("val", {}).items() if k.count("/") == 2},
        "test": {k.split("/")[2]: v for k, v in best.get("test", {}).items() if k.count("/") == 2},
    }
    tags = {
        tr.ROLE: "baseline",
        KEY_TAG: key,
        TASK_TAG: task,
        "mtsam.sweep": sweep,
        "mtsam.adapter": cfg["adapter"]["type"],
        RESULT_TAG: json.dumps(result),
        "mlflow.note.content": f"single-task baseline for {task} (key {key}), trained by sweep '{sweep}'",
    }
    if parent_run_id:  # grouped under the sweep that trained it, not loose at the top level
        tags[tr.PARENT] = parent_run_id
    run = tr.create_run(client, experiment_id, tags, f"baseline-{task}-{key[:8]}")
    run_id = run.info.run_id
    tr.log_params(client, run_id, run_params(cfg))
    tr.log_metrics(client, run_id, {f"model/{k}_params": v for k, v in out["parameters"].items()}, step=0)
    for record in out["history"]:
        tr.log_metrics(client, run_id, tr.epoch_metrics(record), step=int(record["epoch"]))
    client.set_terminated(run_id, status="FINISHED")
    return client.get_run(run_id)


def assemble(runs: dict[str, Any], tasks: list[str], directions: dict[str, dict[str, bool]]) -> dict:
    """Baseline runs → ``{"val": {task: {metric: v}}, "test": {...}, "directions": {...}}``."""
    out: dict[str, Any] = {"val": {}, "test": {}}
    for task in tasks:
        result = json.loads(runs[task].data.tags[RESULT_TAG])
        out["val"][task] = result["val"]
        out["test"][task] = result["test"]
    out["directions"] = {t: directions[t] for t in tasks}
    return out


def resolve(
    client,
    experiment_id: str,
    base: dict,
    adapter: dict | None,
    sweep: str,
    cpu: float,
    gpu: float,
    say: Callable[[str], None],
    parent_run_id: str | None = None,
    seeds: int = 1,
) -> tuple[dict, str, list[str]]:
    """(baseline dict, key, baseline run ids): cached runs reused, missing tasks trained now.
    ``seeds`` > 1: every task once per seed (as the trials' seeds: ``seeds.apply_seed``), each its
    own cached run; the baseline is their mean (``std`` and ``seeds`` say how far they spread)."""
    from mtsam.evaluation import directions
    from mtsam.tasks import build_tasks

    from .seeds import apply_seed

    tasks = list(base["data"]["tasks"])
    templates = [apply_seed(template(base, adapter), s) for s in range(seeds)]
    keys = [baseline_key(t) for t in templates]
    cached = [find_cached(client, key, tasks) for key in keys]  # newest first: listed in task order
    found = {(task, s): cached[s][task] for s in range(seeds) for task in tasks if task in cached[s]}
    label = (lambda task, s: task) if seeds == 1 else (lambda task, s: f"{task} (seed {s})")
    key = keys[0] if seeds == 1 else hashlib.sha1(",".join(keys).encode()).hexdigest()[:12]
    missing = [(t, s) for s in range(seeds) for t in tasks if (t, s) not in found]
    if found:
        say(f"baselines: reusing {', '.join(label(t, s) for t, s in found)} (key {key})")
    if missing:
        say(f"baselines: training {', '.join(label(t, s) for t, s in missing)} (single-task runs, key {key})")
        configs = {label(t, s): task_config(templates[s], t) for t, s in missing}
        outs = train(configs, cpu, gpu)
        for t, s in missing:
            cfg = configs[label(t, s)]
            found[t, s] = log_run(
                client, experiment_id, keys[s], t, cfg, outs[label(t, s)], sweep, parent_run_id
            )
    dirs = directions(build_tasks(validate_config(base).data.channels()))
    per_seed = [assemble({t: found[t, s] for t in tasks}, tasks, dirs) for s in range(seeds)]
    run_ids = [found[t, s].info.run_id for s in range(seeds) for t in tasks]
    return (per_seed[0] if seeds == 1 else seed_mean(per_seed)), key, run_ids


def seed_mean(per_seed: list[dict]) -> dict:
    """Baselines of several seeds → their mean per split, task and metric (``std``: sample std)."""
    from .seeds import mean_std

    out: dict[str, Any] = {"val": {}, "test": {}, "std": {"val": {}, "test": {}}, "seeds": len(per_seed)}
    for split in ("val", "test"):
        for task, metrics in per_seed[0][split].items():
            out[split][task], out["std"][split][task] = {}, {}
            for metric in metrics:
                mean, std, _ = mean_std(b[split][task][metric] for b in per_seed)
                out[split][task][metric] = mean
                out["std"][split][task][metric] = std
    out["directions"] = per_seed[0]["directions"]
    return out
