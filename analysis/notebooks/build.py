"""Regenerate the notebooks of this folder: ``python -m analysis.notebooks.build``.

The .ipynb files are generated (nbformat v4, no outputs) so that their code stays reviewable here.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent
PARAMETERS = """# papermill parameters; the defaults open what `make demo` wrote
tracking_uri = "sqlite:///runs/mlflow.db"  # relative: found from here or a parent folder (the repo root)
experiment = None  # None: the store's latest sweep (quickstart, quickstart-2, ...)
out_dir = "analysis_out"
parent_run_id = None  # None: the experiment's latest sweep run"""
LOAD = """from pathlib import Path

import pandas as pd
from IPython.display import Image, Markdown, display

import analysis

out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
tracking_uri = analysis.find_store(tracking_uri)
experiment = experiment or analysis.latest_sweep_experiment(tracking_uri)
sweep = analysis.load_sweep(tracking_uri, experiment, parent_run_id)
objective = sweep.objective  # the sweep's own: ranked on validation at each trial's selected epoch
value, higher = objective.column, objective.higher_is_better
print(f"sweep '{sweep.name}' from {tracking_uri}")
print(f"ranked by {objective.key} ({objective.mode}, {objective.source}) on the validation split;")
print("test metrics are shown beside, never used to choose; only full-budget trials are compared")
for note in sweep.notes:
    print("note:", note)
sweep.summary()"""


def show_figure(fig: str, name: str, caption: str) -> str:
    path = f'out / "{name}.png"'
    return (
        f"{fig}\nanalysis.save_figure(fig, {path})\ndisplay(Image(filename=str({path})))\n"
        f"display(Markdown({caption!r}))"
    )


SWEEP_SUMMARY = [
    new_markdown_cell(
        "# Sweep summary\n\nBest trial per (adapter, weighting, ranks), all trials with every searched "
        "hyperparameter and its importance, weighting methods, ToRA ranks and learning curves of one "
        "sweep. **Selection uses the sweep's validation objective only** (the parent run's "
        "`mtsam.objective`, default `val/delta_b_task`), over the trials that ran their full budget; "
        "each picked trial's test metrics of the same selected epoch are shown beside it. Early-stopped "
        "trials appear as hollow markers labelled `stopped@E` and never set a range or a mean. "
        "Tables and figures also land in `out_dir`."
    ),
    new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
    new_code_cell(LOAD),
    new_markdown_cell("## How Δb is computed"),
    new_code_cell(
        "from analysis.explain import FORMULA, baseline_source, baseline_table\n\n"
        "if sweep.baseline:\n"
        '    display(Markdown("\\n".join(f"- `{line}`" for line in FORMULA)))\n'
        "    display(Markdown(baseline_source(sweep.tags)))\n"
        "    display(Markdown(analysis.to_markdown(baseline_table(sweep.baseline, sweep.baseline_runs))))\n"
        "else:\n"
        '    print("no baseline: no Δb; trials are ranked by", objective.key)'
    ),
    new_markdown_cell("## Results: best full-budget trial per group (picked on validation)"),
    new_code_cell(
        "results = analysis.results_table(\n"
        "    sweep.trials, baseline=sweep.baseline, value=value, higher_is_better=higher,\n"
        "    trivial=sweep.trivial or None,\n"
        ")\n"
        'analysis.export_table(results, out / "results")\n'
        "display(Markdown(analysis.to_markdown(results)))"
    ),
    new_markdown_cell(
        "## Seeds: configurations as mean ± std\n\nA sweep with `search.seeds` > 1 trains every "
        "configuration with several seeds (trial columns `config`, `seed`). Here each configuration's "
        "mean ± std over its seeds, and whether the best one differs from 0 and from the runner-up by "
        "more than the seed spread (Welch's t-test, two-sided, 5 %). The tables below list every seed."
    ),
    new_code_cell(
        "from analysis.seeds import config_table, is_seeded, plot_configurations, readable, spread_notes\n"
        "from analysis.importance import searched_params\n\n"
        "if not is_seeded(sweep.trials):\n"
        '    print("one seed per configuration (search.seeds: 1): no spread to show")\n'
        "else:\n"
        "    searched = searched_params(sweep.trials, sweep.param_columns)\n"
        "    configs = config_table(sweep.trials, value, higher, searched)\n"
        '    analysis.export_table(configs, out / "configurations")\n'
        "    display(Markdown(analysis.to_markdown(readable(configs, value))))\n"
        "    for line in spread_notes(sweep.trials, configs, value):\n"
        "        print(line)\n"
        "    fig = plot_configurations(configs, value)\n"
        '    analysis.save_figure(fig, out / "configurations.png")\n'
        '    display(Image(filename=str(out / "configurations.png")))'
    ),
    new_markdown_cell("## All trials and the searched hyperparameters"),
    new_code_cell(
        "from analysis.importance import param_importance, searched_params\n"
        "from analysis.summary import trial_table\n\n"
        "searched = searched_params(sweep.trials, sweep.param_columns)\n"
        "display(Markdown(analysis.to_markdown(trial_table(sweep, objective, searched))))\n"
        + show_figure(
            "fig = analysis.plot_hyperparameters(sweep.trials, searched, value, higher)",
            "hyperparameters",
            "Objective (validation, selected epoch) against each searched hyperparameter; "
            "hollow = stopped early.",
        )
    ),
    new_code_cell(
        "importance = param_importance(sweep.trials, searched, value, higher)\n"
        "for note in importance.notes:\n"
        '    print("note:", note)\n'
        "if not importance.table.empty:\n"
        '    print(f"Optuna fANOVA / PED-ANOVA on {importance.trials} full-budget trials")\n'
        "    display(Markdown(analysis.to_markdown(importance.table)))"
    ),
    new_markdown_cell("## Weighting methods"),
    new_code_cell(
        "weighting = analysis.weighting_comparison(sweep.trials, value, higher)\n"
        'analysis.export_table(weighting, out / "weighting")\n'
        "display(Markdown(analysis.to_markdown(weighting)))\n"
        + show_figure(
            "fig = analysis.plot_weighting(sweep.trials, value, higher)",
            "weighting",
            "Objective per weighting method (validation): bar = best full-budget trial.",
        )
    ),
    new_markdown_cell("## ToRA rank sensitivity (R1, R2, R3)"),
    new_code_cell(
        "ranks = analysis.rank_sensitivity(sweep.trials, value, higher)\n"
        "if ranks.empty:\n"
        '    print("no full-budget ToRA trials")\n'
        "else:\n"
        '    analysis.export_table(ranks, out / "rank_sensitivity")\n'
        "    display(Markdown(analysis.to_markdown(ranks)))\n"
        "    fig = analysis.plot_rank_sensitivity(sweep.trials, value, higher)\n"
        '    analysis.save_figure(fig, out / "rank_sensitivity.png")\n'
        '    display(Image(filename=str(out / "rank_sensitivity.png")))'
    ),
    new_markdown_cell("## Learning curves"),
    new_code_cell(
        show_figure(
            "fig = analysis.plot_learning_curves(sweep.history, sweep.trials)",
            "learning_curves",
            "Per-epoch training loss and validation metric, one line per trial (dashed: stopped early).",
        )
    ),
    new_markdown_cell(
        "## Re-basing Δb on another baseline\n\n`sweep.rebase(baseline)` recomputes every Δb from the "
        "raw metrics against any baseline of the `baseline.json` form (`{'val': {task: {metric: v}}, "
        "'test': {...}}`, e.g. published single-task numbers). Here: against the best full-budget "
        "trial itself, i.e. how far every trial is from it (that trial gets Δb = 0)."
    ),
    new_code_cell(
        "best = analysis.best_per_group(sweep.trials, by=(), value=value, higher_is_better=higher).iloc[0]\n"
        "other = {}\n"
        'for split in ("val", "test"):\n'
        "    for task, metrics in analysis.metric_columns(sweep.trials, split).items():\n"
        "        other.setdefault(split, {})[task] = {m: float(best[c]) for m, c in metrics.items()}\n"
        "rebased = sweep.rebase(other)\n"
        'columns = ["trial_id", "outcome"]\n'
        "compare = sweep.trials[columns].copy()\n"
        "if sweep.has_delta_b:\n"
        '    compare["val Δb vs the sweep\'s baseline (%)"] = sweep.trials["val_delta_b_task"]\n'
        'compare[f"val Δb vs trial {best[\'trial_id\']} (%)"] = rebased.trials["val_delta_b_task"]\n'
        'compare[f"test Δb vs trial {best[\'trial_id\']} (%)"] = rebased.trials["test_delta_b_task"]\n'
        "display(Markdown(analysis.to_markdown(compare)))"
    ),
]

PARETO = [
    new_markdown_cell(
        "# Pareto front: multi-task gain vs trainable parameters\n\nExactly the non-dominated "
        "full-budget trials: no other has at least the same validation objective with at most as many "
        "parameters (and is strictly better in one). The parameter axis is the adapter's parameter "
        "count when it differs between trials (decoders and norms are the same for all), else the "
        "trainable count; when neither differs there is no trade-off to show. Without a baseline the "
        "first validation metric replaces Δb. Test values are shown beside, never used to choose."
    ),
    new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
    new_code_cell(LOAD),
    new_code_cell(
        "from analysis.labels import header\n"
        "from analysis.plots import pareto_x\n\n"
        "x, why = pareto_x(sweep.trials)\n"
        "if x is None:\n"
        "    print(why)\n"
        "else:\n"
        "    front = analysis.pareto_front(sweep.compared, {value: objective.mode, x: 'min'})\n"
        '    columns = ["trial_id", "adapter", "weighting", "ranks", value, objective.test_column, x]\n'
        "    columns = [c for c in dict.fromkeys(columns) if c and c in front.columns]\n"
        "    table = front[columns].reset_index(drop=True)\n"
        '    analysis.export_table(table, out / "pareto")\n'
        '    print(f"{len(front)} of {len(sweep.compared)} full-budget trials are on the front")\n'
        "    display(Markdown(analysis.to_markdown(table.rename(columns=header))))"
    ),
    new_code_cell(
        "if x is not None:\n"
        "    fig = analysis.plot_pareto(sweep.trials, x, value, higher)\n"
        '    analysis.save_figure(fig, out / "pareto.png")\n'
        '    display(Image(filename=str(out / "pareto.png")))\n'
        '    caption = f"{header(value)} (validation) vs {header(x)}"\n'
        '    display(Markdown(f"{caption}; red: Pareto front, hollow: stopped early."))'
    ),
]


def write(cells: list, name: str) -> Path:
    for i, cell in enumerate(cells):
        cell["id"] = f"{name}-{i}"  # stable ids: regenerating gives no spurious diff
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.validate(nb)
    path = HERE / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def main() -> None:
    for cells, name in ((SWEEP_SUMMARY, "sweep_summary"), (PARETO, "pareto")):
        print(write(cells, name))


if __name__ == "__main__":
    main()
