"""Hyperparameter sweeps for MTSAM: Ray Tune + Optuna search, MLflow tracking, cached baselines.

    from mtsam.sweep import load_sweep_config, make_plan, run_sweep
    plan = make_plan(*load_sweep_config("tune/configs/quickstart.yaml", ["search.num_samples=4"]))
    result = run_sweep(plan)          # SweepResult: rows (best first), pareto, best_adapter, ...

The command line is ``python tune/search.py`` (``mtsam.sweep.cli.main``). Names load lazily so the
CLI can fail fast on a bad config without importing Ray.
"""

from mtsam._lazy import lazy_exports

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

__getattr__, __all__ = lazy_exports("mtsam.sweep", _EXPORTS)
