"""Hyperparameter sweeps for MTSAM: Ray Tune + Optuna search, MLflow tracking, cached baselines.

    from mtsam.sweep import load_sweep_config, make_plan, run_sweep
    plan = make_plan(*load_sweep_config("tune/configs/quickstart.yaml", ["search.num_samples=4"]))
    result = run_sweep(plan)          # SweepResult: rows (best first), pareto, best_adapter, ...

The command line is ``python tune/search.py`` (``mtsam.sweep.cli.main``). Names load lazily so the
CLI can fail fast on a bad config without importing Ray.
"""

from importlib import import_module

_EXPORTS = {
    "SweepConfig": "mtsam.sweep.config",
    "load_sweep_config": "mtsam.sweep.config",
    "SweepPlan": "mtsam.sweep.plan",
    "make_plan": "mtsam.sweep.plan",
    "SweepResult": "mtsam.sweep.runner",
    "run_sweep": "mtsam.sweep.runner",
    "preflight": "mtsam.sweep.runner",
    "MlflowTracker": "mtsam.sweep.callback",
    "main": "mtsam.sweep.cli",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mtsam.sweep' has no attribute {name!r}")
