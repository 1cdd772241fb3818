"""A small MLflow store written through the MLflow API in the format of docs/TRACKING.md.

Not a pytest conftest (tests import it): known runs whose Δb, Pareto front and tables the tests
compute by hand. Three tasks with 2, 2 and 3 metrics, so task- and metric-averaged Δb differ.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DIRECTIONS = {
    "semantic": {"miou": True, "pix_acc": True},
    "depth": {"abs_err": False, "rel_err": False},
    "normal": {"mean": False, "median": False, "within_11.25": True},
}
TEST_BASE = {
    "semantic": {"miou": 0.40, "pix_acc": 0.80},
    "depth": {"abs_err": 0.50, "rel_err": 0.20},
    "normal": {"mean": 20.0, "median": 16.0, "within_11.25": 0.40},
}
# val differs from test only in miou, so a split mix-up changes Δb
VAL_BASE = {**TEST_BASE, "semantic": {"miou": 0.55, "pix_acc": 0.80}}
BASELINE = {"val": VAL_BASE, "test": TEST_BASE, "directions": DIRECTIONS}
# val metric at epoch e = final test value × VAL_SCALE[e]; the best epoch always has scale 1
VAL_SCALE = {1: 0.9, 2: 1.0, 3: 0.95}
LOGGED_DELTA = 42.0  # what the "trainer" logged as Δb: the analysis must recompute, not copy


def _metrics(miou, pix, abs_err, rel, mean, median, w11) -> dict[str, dict[str, float]]:
    return {
        "semantic": {"miou": miou, "pix_acc": pix},
        "depth": {"abs_err": abs_err, "rel_err": rel},
        "normal": {"mean": mean, "median": median, "within_11.25": w11},
    }


TORA = {"adapter.type": "tora", "adapter.targets": '["q", "k", "v"]', "adapter.scaling": "0.5"}
TRIALS: list[dict[str, Any]] = [
    {
        "trial_id": "t1",
        "status": "FINISHED",
        "weighting": "equal",
        "params": {**TORA, "adapter.ranks": "[32, 32, 4]", "train.lr": "0.001", "train.amp": "False"},
        "trainable": 3_000_000,
        "epochs": 3,
        "best_epoch": 2,
        # gains +10 +5 | +10 −10 | +5 −5 +10 %
        "test": _metrics(0.44, 0.84, 0.45, 0.22, 19.0, 16.8, 0.44),
    },
    {
        "trial_id": "t2",
        "status": "FINISHED",
        "weighting": "equal",
        "params": {**TORA, "adapter.ranks": "[16, 16, 4]", "train.lr": "0.0005", "train.amp": "False"},
        "trainable": 2_000_000,
        "epochs": 3,
        "best_epoch": 3,
        # gains +4 0 | +2 +2 | 0 0 +3 %
        "test": _metrics(0.416, 0.80, 0.49, 0.196, 20.0, 16.0, 0.412),
    },
    {
        "trial_id": "t3",
        "status": "KILLED",
        "reason": "early stopped by ASHA at epoch 2",
        "weighting": "dwa",
        "params": {
            **TORA,
            "adapter.ranks": "[32, 32, 4]",
            "train.lr": "0.002",
            "train.amp": "True",
            "weighting.temperature": "2.0",
        },
        "trainable": 3_000_000,
        "epochs": 2,
        "best_epoch": 2,
        # gains +3 0 | 0 0 | 0 0 0 %
        "test": _metrics(0.412, 0.80, 0.50, 0.20, 20.0, 16.0, 0.40),
    },
    {
        "trial_id": "t4",
        "status": "FINISHED",
        "weighting": "equal",
        "params": {"adapter.type": "lora", "adapter.rank": "8", "train.lr": "0.001", "train.amp": "False"},
        "trainable": 1_000_000,
        "epochs": 3,
        "best_epoch": 3,
        # gains −2 0 | 0 0 | 0 0 0 %
        "test": _metrics(0.392, 0.80, 0.50, 0.20, 20.0, 16.0, 0.40),
    },
    {
        "trial_id": "t5",
        "status": "FAILED",
        "reason": "RuntimeError: out of memory",
        "weighting": "dwa",
        "params": {**TORA, "adapter.ranks": "[8, 8, 2]", "train.lr": "0.01", "train.amp": "False"},
        "trainable": 500_000,
        "epochs": 1,
        "best_epoch": None,  # died before its first validation
        "test": None,
    },
]
for _spec in TRIALS:
    _spec["params"].update({"train.epochs": "3", "weighting.method": _spec["weighting"]})


def _flat(prefix: str, values: dict[str, dict[str, float]], scale: float = 1.0) -> dict[str, float]:
    return {f"{prefix}/{t}/{m}": v * scale for t, ms in values.items() for m, v in ms.items()}


def _log_trial(client: Any, exp_id: str, parent_id: str, spec: dict[str, Any], t0: int) -> str:
    from mlflow.entities import Metric, Param

    tags = {
        "mlflow.parentRunId": parent_id,
        "mtsam.role": "trial",
        "mtsam.trial_id": spec["trial_id"],
        "mtsam.adapter": spec["params"]["adapter.type"],
        "mtsam.weighting": spec["weighting"],
    }
    if spec.get("reason"):
        tags["mtsam.status_reason"] = spec["reason"]
    run = client.create_run(exp_id, start_time=t0, tags=tags, run_name=f"trial-{spec['trial_id']}")
    rid = run.info.run_id
    metrics = [Metric("model/trainable_params", spec["trainable"], t0, 0)]
    metrics.append(Metric("model/total_params", 100_000_000, t0, 0))
    for epoch in range(1, spec["epochs"] + 1):
        ts = t0 + 1000 * epoch
        values = {"train/loss/total": 1.0 / epoch, "train/lr": 1e-3}
        if spec["test"] is not None:
            values.update(_flat("val", spec["test"], VAL_SCALE[epoch]))
            values["val/delta_b_task"] = LOGGED_DELTA
            values["best/epoch"] = min(epoch, spec["best_epoch"])
            # test metrics are logged when the selection changes: baseline values, then the final ones
            if epoch == spec["best_epoch"]:
                values.update(_flat("test", spec["test"]))
                values["test/delta_b_task"] = LOGGED_DELTA
            elif epoch == 1:
                values.update(_flat("test", TEST_BASE))
        metrics += [Metric(k, float(v), ts, epoch) for k, v in values.items()]
    params = [Param(k, v) for k, v in spec["params"].items()]
    client.log_batch(rid, metrics=metrics, params=params)
    client.set_terminated(rid, spec["status"], end_time=t0 + 1000 * (spec["epochs"] + 1))
    return rid


def _parent(client: Any, exp_id: str, tmp: Path, baseline: dict | None, name: str) -> str:
    tags = {
        "mtsam.role": "sweep",
        "mtsam.sweep": name,
        "mtsam.git_commit": "0" * 40,
        "mtsam.config_file": "configs/test.yaml",
        "mtsam.dataset": "nyuv2",
        "mtsam.variant": "tiny",
        "mtsam.search_mode": "pareto",
    }
    rid = client.create_run(exp_id, tags=tags, run_name=name, start_time=1_700_000_000_000).info.run_id
    if baseline is not None:
        path = tmp / name / "baseline.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(baseline))
        client.log_artifact(rid, str(path))
    client.set_terminated(rid, "FINISHED")
    return rid


def populate_store(tmp: Path) -> dict[str, Any]:
    """Experiments: "sweep" (parent + baseline.json, TRIALS, a baseline run), "sweep-nobase"
    (no baseline.json, t1 and t2), "sweep-empty" (a parent without trials)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    art = (tmp / "artifacts").as_uri()
    exp = client.create_experiment("sweep", artifact_location=f"{art}/sweep")
    parent = _parent(client, exp, tmp, BASELINE, "sweep")
    t0 = 1_700_000_100_000
    run_ids = {
        s["trial_id"]: _log_trial(client, exp, parent, s, t0 + 10_000 * i) for i, s in enumerate(TRIALS)
    }
    tags = {"mtsam.role": "baseline", "mtsam.task": "semantic", "mtsam.baseline_key": "nyuv2/semantic"}
    base = client.create_run(exp, tags=tags, run_name="baseline-semantic").info.run_id
    client.log_batch(
        base,
        metrics=[Metric(k, v, t0, 5) for k, v in _flat("test", {"semantic": TEST_BASE["semantic"]}).items()],
    )
    client.set_terminated(base, "FINISHED")

    exp2 = client.create_experiment("sweep-nobase", artifact_location=f"{art}/nobase")
    parent2 = _parent(client, exp2, tmp, None, "sweep-nobase")
    for i, spec in enumerate(TRIALS[:2]):
        _log_trial(client, exp2, parent2, spec, t0 + 10_000 * i)
    exp3 = client.create_experiment("sweep-empty", artifact_location=f"{art}/empty")
    _parent(client, exp3, tmp, BASELINE, "sweep-empty")
    return {
        "uri": uri,
        "experiment": "sweep",
        "parent_run_id": parent,
        "run_ids": run_ids,
        "baseline_run": base,
    }


# --- A store in the tracking contract of issue 14 (mtsam.outcome, dotted params, parent tags) -------
# Validation and test disagree on purpose: A is best on val, B on test; D stopped early with a value
# that would win (and stretch every axis) if it were counted.
CONTRACT_BASE = {
    "semantic": {"miou": 0.50, "pix_acc": 0.80},
    "depth": {"abs_err": 0.50, "rel_err": 0.20},
}
CONTRACT_BASELINE = {
    "val": CONTRACT_BASE,
    "test": CONTRACT_BASE,
    "directions": {
        "semantic": {"miou": True, "pix_acc": True},
        "depth": {"abs_err": False, "rel_err": False},
    },
}
CONTRACT_TRIALS: list[dict[str, Any]] = [
    # trial, outcome, val miou, test miou, params, adapter params
    {"trial_id": "A", "outcome": "finished", "val": 0.60, "test": 0.45, "lr": 0.001, "w": "fixed", "r1": 16},
    {"trial_id": "B", "outcome": "finished", "val": 0.52, "test": 0.70, "lr": 0.003, "w": "dwa", "r1": 32},
    {"trial_id": "C", "outcome": "finished", "val": 0.40, "test": 0.40, "lr": 0.010, "w": "fixed", "r1": 8},
    {
        "trial_id": "D",
        "outcome": "stopped_early",
        "val": 0.95,
        "test": 0.95,
        "lr": 0.0003,
        "w": "dwa",
        "r1": 8,
    },
    {"trial_id": "E", "outcome": "failed", "val": None, "test": None, "lr": 0.05, "w": "fixed", "r1": 16},
]
CONTRACT_TRIVIAL = {
    "val": {"semantic": {"miou": 0.05, "pix_acc": 0.30}, "depth": {"abs_err": 1.0, "rel_err": 0.5}},
    "test": {"semantic": {"miou": 0.05, "pix_acc": 0.30}, "depth": {"abs_err": 1.0, "rel_err": 0.5}},
}
CONTRACT_EPOCHS = 3
_STATUS = {"finished": "FINISHED", "stopped_early": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


def _contract_trial(client: Any, exp_id: str, parent_id: str, spec: dict[str, Any], t0: int, i: int) -> str:
    from mlflow.entities import Metric, Param

    epochs = {"finished": CONTRACT_EPOCHS, "stopped_early": 1, "failed": 1}[spec["outcome"]]
    note = {
        "finished": f"ran all {CONTRACT_EPOCHS} epochs",
        "stopped_early": f"stopped by ASHA at epoch 1 of {CONTRACT_EPOCHS}",
        "failed": "failed at epoch 1: RuntimeError: boom",
    }[spec["outcome"]]
    tags = {
        "mlflow.parentRunId": parent_id,
        "mtsam.role": "trial",
        "mtsam.trial_id": spec["trial_id"],
        "mtsam.optuna_trial": str(i),
        "mtsam.outcome": spec["outcome"],
        "mtsam.epochs_planned": str(CONTRACT_EPOCHS),
        "mtsam.adapter": "tora",
        "mtsam.weighting": spec["w"],
        "mlflow.note.content": note,
    }
    if spec["outcome"] == "stopped_early":
        tags["mtsam.stopped_at_epoch"] = "1"
    run = client.create_run(exp_id, start_time=t0, tags=tags, run_name=f"trial-{spec['trial_id']}")
    rid = run.info.run_id
    adapter = 50_000 * spec["r1"] // 8
    metrics = [Metric("model/trainable_params", 1_000_000 + adapter, t0, 0)]
    metrics += [
        Metric("model/adapter_params", adapter, t0, 0),
        Metric("model/total_params", 9_000_000, t0, 0),
    ]
    for epoch in range(1, epochs + 1):
        ts = t0 + 1000 * epoch
        values: dict[str, float] = {"train/loss/total": 1.0 / epoch}
        if spec["val"] is not None:
            vals = {**CONTRACT_BASE, "semantic": {"miou": spec["val"], "pix_acc": 0.80}}
            values.update(_flat("val", vals))
            values["best/epoch"] = epoch
            tests = {**CONTRACT_BASE, "semantic": {"miou": spec["test"], "pix_acc": 0.80}}
            values.update(_flat("test", tests))
        metrics += [Metric(k, float(v), ts, epoch) for k, v in values.items()]
    params = {
        "adapter.type": "tora",
        "adapter.r1": str(spec["r1"]),
        "adapter.r2": "16",
        "adapter.r3": "4",
        "adapter.targets": "q,k,v",
        "train.lr": str(spec["lr"]),
        "train.epochs": str(CONTRACT_EPOCHS),
        "weighting.method": spec["w"],
    }
    if spec["w"] == "dwa":
        params["weighting.temperature"] = str(1.0 + i)
    client.log_batch(rid, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
    client.set_terminated(rid, _STATUS[spec["outcome"]], end_time=t0 + 1000 * (epochs + 1))
    return rid


def populate_contract_store(
    tmp: Path, objective: str = "val/delta_b_task", mode: str = "max", trivial_artifact: bool = False
) -> dict:
    """Experiment "contract": parent (objective tags, baseline.json, trivial/ and sweep/ metrics, or
    the artifact trivial.json instead of trivial/ metrics), CONTRACT_TRIALS as children and two
    nested baseline runs named by mtsam.baseline_runs."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("contract", artifact_location=f"{(tmp / 'artifacts').as_uri()}/contract")
    parent = client.create_run(
        exp,
        run_name="contract",
        start_time=1_700_000_000_000,
        tags={
            "mtsam.role": "sweep",
            "mtsam.sweep": "contract",
            "mtsam.objective": objective,
            "mtsam.objective_mode": mode,
            "mtsam.search_mode": "single",
            "mtsam.scheduler": "ASHA",
            "mtsam.sampler": "TPE",
            "mtsam.baseline": "auto nyuv2/tiny",
            "mlflow.note.content": "searched train.lr, adapter.r1, weighting.method\nΔb: task-averaged, %",
        },
    ).info.run_id
    base_ids = []
    for task in CONTRACT_BASE:
        tags = {"mtsam.role": "baseline", "mtsam.task": task, "mlflow.parentRunId": parent}
        rid = client.create_run(exp, tags=tags, run_name=f"baseline-{task}").info.run_id
        values = {**_flat("val", {task: CONTRACT_BASE[task]}), **_flat("test", {task: CONTRACT_BASE[task]})}
        client.log_batch(rid, metrics=[Metric(k, v, 1, 3) for k, v in values.items()])
        client.set_terminated(rid, "FINISHED")
        base_ids.append(rid)
    client.set_tag(parent, "mtsam.baseline_runs", ",".join(base_ids))
    path = tmp / "contract" / "baseline.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(CONTRACT_BASELINE))
    client.log_artifact(parent, str(path))
    t0 = 1_700_000_100_000
    run_ids = {
        s["trial_id"]: _contract_trial(client, exp, parent, s, t0 + 10_000 * i, i)
        for i, s in enumerate(CONTRACT_TRIALS)
    }
    parent_metrics = {
        f"trivial/{k}": v for split, ts in CONTRACT_TRIVIAL.items() for k, v in _flat(split, ts).items()
    }
    if trivial_artifact:
        parent_metrics = {}
        trivial = tmp / "contract" / "trivial.json"
        trivial.write_text(json.dumps({**CONTRACT_TRIVIAL, "predictor": {"semantic": "majority class"}}))
        client.log_artifact(parent, str(trivial))
    parent_metrics.update(
        {"sweep/trials/finished": 3, "sweep/trials/stopped_early": 1, "sweep/trials/failed": 1}
    )
    client.log_batch(parent, metrics=[Metric(k, float(v), 1, 0) for k, v in parent_metrics.items()])
    client.set_terminated(parent, "FINISHED")
    return {
        "uri": uri,
        "experiment": "contract",
        "parent_run_id": parent,
        "run_ids": run_ids,
        "baselines": base_ids,
    }
