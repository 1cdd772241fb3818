"""The one naming of a trial's hyperparameters: dotted names, one scalar each (docs/TRACKING.md).

The same names are the MLflow params of a trial run, the Optuna parameter names, the keys of
``sampled`` in ``summary.json``, and what ``--dry-run`` and the report show. Inside the sweep a
sampled value travels under its *space path* (``adapter/ranks/r1``; Ray un-flattens "/" into the
trial's nested config), so two functions translate:

    param_name("adapter/ranks/r1")              → "adapter.r1"
    param_name("weighting/fixed/weights/depth") → "weighting.weights.depth"
    run_params(trial_config)                    → {"adapter.type": "tora", "adapter.r1": "32", ...}

Only the searched and key values are params (a user compares them); the whole resolved config is
the run's ``config.yaml`` artifact. Never ``None``, never a JSON blob, no ``faults.*``, no baseline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

RANK_NAMES = ("r1", "r2", "r3")
ADAPTER_KEYS = ("rank", "alpha", "scaling", "dropout", "targets", "blocks")
TRAIN_KEYS = ("lr", "warmup_ratio", "weight_decay", "ortho_weight", "epochs")
MAX_VALUE = 6000  # MLflow's limit for a param value


def param_name(space_path: str) -> str:
    """A sampled value's space path → its dotted param name."""
    parts = space_path.split("/")
    if parts[:2] == ["adapter", "ranks"]:
        return f"adapter.{parts[2]}"
    if parts[0] == "weighting" and len(parts) > 2:  # weighting/<method>/<hp>[/<task>]: the method is a param
        return ".".join(["weighting", *parts[2:]])
    return ".".join(parts)


def sampled_params(sampled: Mapping[str, Any]) -> dict[str, Any]:
    """Flat sampled values keyed by space path → the same values keyed by param name (a seed's
    index is not a hyperparameter: it is the run's ``mtsam.seed`` tag)."""
    return {param_name(k): v for k, v in sampled.items() if not k.startswith("seed/")}


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)[:MAX_VALUE]


def run_params(config: Mapping[str, Any]) -> dict[str, str]:
    """A trial's (or baseline's) resolved run config → its MLflow params (strings, no ``None``)."""
    out: dict[str, Any] = {}
    adapter = config.get("adapter") or {}
    out["adapter.type"] = adapter.get("type")
    ranks = adapter.get("ranks")
    if adapter.get("type") == "tora" and ranks:
        out.update({f"adapter.{n}": int(r) for n, r in zip(RANK_NAMES, ranks)})
    for key in ADAPTER_KEYS:
        out[f"adapter.{key}"] = adapter.get(key)
    weighting = config.get("weighting") or {}
    out["weighting.method"] = weighting.get("method")
    tasks = list((config.get("data") or {}).get("tasks") or [])
    for key, value in weighting.items():
        if key == "method":
            continue
        if isinstance(value, (list, tuple)) and len(value) == len(tasks):
            out.update({f"weighting.{key}.{t}": v for t, v in zip(tasks, value)})
        else:
            out[f"weighting.{key}"] = value
    train = config.get("train") or {}
    for key in TRAIN_KEYS:
        out[f"train.{key}"] = train.get(key)
    if adapter.get("type") != "tora":
        out.pop("train.ortho_weight", None)  # λ weighs ToRA's regulariser only
    data, model = config.get("data") or {}, config.get("model") or {}
    out["data.batch_size"] = data.get("batch_size")
    out["model.variant"] = model.get("variant")
    out["model.image_size"] = model.get("image_size")
    return {k: _text(v) for k, v in out.items() if v is not None and not isinstance(v, Mapping)}


def sweep_params(resolved: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, str]:
    """The parent run's params: the sweep's own settings (scalars) and the base run's key values;
    the whole resolved config (space included) is the parent's ``config.yaml`` artifact."""
    out: dict[str, Any] = {}
    for section in ("search", "scheduler", "resources"):
        for key, value in (resolved.get(section) or {}).items():
            if isinstance(value, (str, int, float, bool)):
                out[f"{section}.{key}"] = value
    for key in ("max_failures", "top_k"):
        out[key] = resolved.get(key)
    keys = ("train.epochs", "data.batch_size", "model.variant", "model.image_size", "adapter.type")
    base_params = run_params(base)
    out.update({k: base_params[k] for k in keys if k in base_params})
    out["data.dataset"] = (base.get("data") or {}).get("dataset")
    out["data.tasks"] = ",".join((base.get("data") or {}).get("tasks") or [])
    return {k: _text(v) for k, v in out.items() if v is not None}
