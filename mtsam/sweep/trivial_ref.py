"""The sweep's trivial reference row: constant predictors from the base config's training split,
logged on the parent run (artifact ``trivial.json``, metrics ``trivial/<split>/<task>/<metric>``)."""

from __future__ import annotations

from collections.abc import Callable

from mtsam.trivial import TRIVIAL_FILE, flat_metrics

from . import tracking as tr


def compute(base: dict) -> dict:
    """``trivial.json`` content for the sweep's data (the trials' splits, the trials' meters)."""
    from mtsam import factory
    from mtsam.config import validate_config
    from mtsam.trivial import trivial_predictors

    config = validate_config(base)
    train, val, test = factory.build_datasets(config)
    return trivial_predictors(train, val, test, factory.tasks_for(config))


def log_trivial(client, parent_run_id: str, base: dict, say: Callable[[str], None] | None = None) -> dict:
    """Compute and log the trivial row once per sweep (a resumed sweep does not log it twice)."""
    result = compute(base)
    metrics = flat_metrics(result)
    if not set(metrics) <= set(client.get_run(parent_run_id).data.metrics):
        client.log_dict(parent_run_id, result, TRIVIAL_FILE)
        tr.log_metrics(client, parent_run_id, metrics, step=0)
    if say is not None:
        first = {t: next(iter(m.items())) for t, m in result["val"].items()}
        say("trivial predictors (val): " + "  ".join(f"{t} {m} {v:.4g}" for t, (m, v) in first.items()))
    return result
