"""Regenerate the notebooks of this folder: ``python -m analysis.notebooks.build``.

The .ipynb files are generated (nbformat v4, no outputs) so that their code stays reviewable here.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent
PARAMETERS = """# papermill parameters
tracking_uri = "sqlite:///runs/mlflow.db"
experiment = "mtsam-sweep"
out_dir = "analysis_out"
parent_run_id = None  # None: the experiment's latest sweep"""
LOAD = """from pathlib import Path

from IPython.display import Image, Markdown, display

import analysis

out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
sweep = analysis.load_sweep(tracking_uri, experiment, parent_run_id)
value, higher = analysis.primary_objective(sweep.trials, sweep.split)
for note in sweep.notes:
    print("note:", note)
sweep.summary()"""


def show_figure(fig: str, name: str) -> str:
    path = f'out / "{name}.png"'
    return f"{fig}\nanalysis.save_figure(fig, {path})\ndisplay(Image(filename=str({path})))"


SWEEP_SUMMARY = [
    new_markdown_cell(
        "# Sweep summary\n\nBest trial per (adapter, weighting, ranks), weighting methods, ToRA rank "
        "sensitivity and learning curves of one sweep. Δb is recomputed from the raw metrics and the "
        "sweep's `baseline.json` (task-averaged LibMTL form and metric-averaged form, in %); without a "
        "baseline trials are ranked by their first task metric. Tables and figures also land in `out_dir`."
    ),
    new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
    new_code_cell(LOAD),
    new_markdown_cell("## Results: best trial per group"),
    new_code_cell(
        "results = analysis.results_table(\n"
        "    sweep.trials, split=sweep.split, baseline=sweep.baseline, value=value\n"
        ")\n"
        'analysis.export_table(results, out / "results")\n'
        "display(Markdown(analysis.to_markdown(results)))"
    ),
    new_markdown_cell("## Weighting methods"),
    new_code_cell(
        "weighting = analysis.weighting_comparison(sweep.trials, value, higher)\n"
        'analysis.export_table(weighting, out / "weighting")\n'
        "display(Markdown(analysis.to_markdown(weighting)))\n"
        + show_figure("fig = analysis.plot_weighting(sweep.trials, value, higher)", "weighting")
    ),
    new_markdown_cell("## ToRA rank sensitivity (R1, R2, R3)"),
    new_code_cell(
        "ranks = analysis.rank_sensitivity(sweep.trials, value, higher)\n"
        "if ranks.empty:\n"
        '    print("no ToRA trials")\n'
        "else:\n"
        '    analysis.export_table(ranks, out / "rank_sensitivity")\n'
        "    display(Markdown(analysis.to_markdown(ranks)))\n"
        "    fig = analysis.plot_rank_sensitivity(sweep.trials, value, higher)\n"
        '    analysis.save_figure(fig, out / "rank_sensitivity.png")\n'
        '    display(Image(filename=str(out / "rank_sensitivity.png")))'
    ),
    new_markdown_cell("## Learning curves"),
    new_code_cell(
        show_figure("fig = analysis.plot_learning_curves(sweep.history, sweep.trials)", "learning_curves")
    ),
]

PARETO = [
    new_markdown_cell(
        "# Pareto front: multi-task gain vs trainable parameters\n\nExactly the non-dominated trials: "
        "no other trial has at least the same Δb with at most as many trainable parameters (and is "
        "strictly better in one). Without a baseline the first task metric replaces Δb."
    ),
    new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
    new_code_cell(LOAD),
    new_code_cell(
        'objectives = {value: "max" if higher else "min", "trainable_params": "min"}\n'
        "front = analysis.pareto_front(sweep.trials, objectives)\n"
        'columns = ["trial_id", "adapter", "weighting", "ranks", value, "trainable_params"]\n'
        "table = front[columns].reset_index(drop=True)\n"
        'analysis.export_table(table, out / "pareto")\n'
        'print(f"{len(front)} of {len(sweep.trials)} trials are on the front")\n'
        "display(Markdown(analysis.to_markdown(table)))"
    ),
    new_code_cell(
        show_figure('fig = analysis.plot_pareto(sweep.trials, "trainable_params", value, higher)', "pareto")
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
