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
