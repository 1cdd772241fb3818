"""Analysis of MTSAM-Tune sweeps: tidy pandas tables, Δb, Pareto fronts, figures, reports.

    import analysis
    sweep = analysis.load_sweep("sqlite:///runs/mlflow.db", "my-sweep")
    analysis.results_table(sweep.trials, baseline=sweep.baseline)

Column reference of ``sweep.trials`` / ``sweep.history``: ``analysis.frames``. MLflow is imported
only when a sweep is loaded from it, torch only when Δb is computed.
"""

from analysis.delta import DIRECTIONS, add_delta_b, baseline_from_runs, delta_b_frame, metric_columns
from analysis.errors import AnalysisError
from analysis.export import export_table, to_latex, to_markdown
from analysis.mlflow_source import find_store, latest_sweep_experiment, load_mlflow_sweep
from analysis.objective import Objective
from analysis.pareto import pareto_front, pareto_mask
from analysis.plots import (
    plot_hyperparameters,
    plot_importance,
    plot_learning_curves,
    plot_pareto,
    plot_rank_sensitivity,
    plot_weighting,
    save_figure,
)
from analysis.ray_source import load_ray_sweep
from analysis.sweep import Sweep
from analysis.tables import (
    best_per_group,
    primary_objective,
    rank_sensitivity,
    results_table,
    weighting_comparison,
)

load_sweep = load_mlflow_sweep  # the usual entry point

__all__ = [
    "DIRECTIONS",
    "AnalysisError",
    "Sweep",
    "add_delta_b",
    "baseline_from_runs",
    "best_per_group",
    "delta_b_frame",
    "export_table",
    "find_store",
    "latest_sweep_experiment",
    "Objective",
    "plot_hyperparameters",
    "plot_importance",
    "load_mlflow_sweep",
    "load_ray_sweep",
    "load_sweep",
    "metric_columns",
    "pareto_front",
    "pareto_mask",
    "plot_learning_curves",
    "plot_pareto",
    "plot_rank_sensitivity",
    "plot_weighting",
    "primary_objective",
    "rank_sensitivity",
    "results_table",
    "save_figure",
    "to_latex",
    "to_markdown",
    "weighting_comparison",
]
