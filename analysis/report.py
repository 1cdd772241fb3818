"""``python -m analysis.report``: an HTML report (tables, embedded figures) plus CSV/PNG files of a sweep.

    python -m analysis.report --tracking-uri sqlite:///runs/mlflow.db --experiment NAME --out DIR

Writes DIR/report.html, trials.csv, history.csv, results.{md,tex,csv}, the figures' PNGs and a
manifest listing them (``analysis.outdir``). DIR must be new, empty or an earlier report: only the
report's own files are replaced, nothing else in DIR is touched, and an error leaves DIR as it was.
Errors: one ``error: ...`` line, exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from analysis import html
from analysis.errors import AnalysisError
from analysis.export import export_table
from analysis.outdir import MANIFEST, check_out_dir, write_report_dir
from analysis.plots import save_figure
from analysis.sweep import Sweep

EXIT_ERROR = 2
SECTIONS = {  # name -> (heading, tables shown, figures shown)
    "delta_b": ("How Δb is computed", ("baseline",), ()),
    "results": ("Best trial per group (picked on validation, test shown beside)", ("results",), ()),
    "seeds": ("Configurations over seeds (mean ± std)", ("configurations",), ("configurations",)),
    "trials": ("All trials", ("trials",), ()),
    "hyperparameters": (
        "Searched hyperparameters and their importance",
        ("importance",),
        ("hyperparameters", "importance"),
    ),
    "pareto": ("Pareto front: objective vs parameters", ("pareto",), ("pareto",)),
    "weighting": ("Weighting methods", ("weighting",), ("weighting",)),
    "ranks": ("ToRA rank sensitivity", ("ranks",), ("rank_sensitivity",)),
    "curves": ("Learning curves", (), ("learning_curves",)),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, like every other error of this CLI
        raise AnalysisError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m analysis.report", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--tracking-uri", required=True, help="MLflow tracking URI, e.g. sqlite:///runs/mlflow.db"
    )
    parser.add_argument("--experiment", help="sweep (MLflow experiment) name (default: the latest sweep)")
    parser.add_argument("--parent-run-id", help="parent run of the sweep (default: the experiment's latest)")
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help=f"output directory: new, empty or an earlier report (with {MANIFEST})",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and MLflow's logging")
    return parser


def write_report(sweep: Sweep, out_dir: Path) -> list[Path]:
    """Write all report files into the existing directory ``out_dir``; returns their paths."""
    from analysis.summary import summarize

    summary = summarize(sweep)
    written = []
    sweep.trials.to_csv(out_dir / "trials.csv", index=False)
    sweep.history.to_csv(out_dir / "history.csv", index=False)
    written += [out_dir / "trials.csv", out_dir / "history.csv"]
    if "results" in summary.tables:
        written += export_table(summary.tables["results"], out_dir / "results")
    pngs = {name: save_figure(fig, out_dir / f"{name}.png") for name, fig in summary.figures.items()}
    written += list(pngs.values())
    info = {k: v for k, v in sweep.summary().items() if v is not None}
    if sweep.objective is not None:
        o = sweep.objective
        info["objective"] = f"{o.key} ({o.mode}; {o.source}), validation split, selected epoch"
    info.update({k: v for k, v in sweep.tags.items() if k.startswith("mtsam.") and k != "mtsam.role"})
    info.update({k: f"{v:.4g}" for k, v in sorted(sweep.parent_metrics.items()) if k.startswith("sweep/")})
    blocks = [html.facts(info), html.notes(summary.notes)]
    description = sweep.tags.get("mlflow.note.content")
    if description:
        blocks.insert(0, html.paragraphs(description.splitlines()))
    for name, (heading, tables, figures) in SECTIONS.items():
        parts = [html.paragraphs(summary.explain, code=True)] if name == "delta_b" and summary.explain else []
        for table in tables:
            if table in summary.tables:
                parts.append(html.table(summary.tables[table], summary.captions.get(table, "")))
        for fig in figures:
            if fig in pngs:
                parts.append(html.figure(pngs[fig], summary.captions.get(f"figure:{fig}", fig)))
        if parts:
            blocks.append(html.section(heading, *parts))
    (out_dir / "report.html").write_text(html.page(f"Sweep report: {sweep.name}", blocks), encoding="utf-8")
    return [out_dir / "report.html", *written]


def run(args: argparse.Namespace) -> Path:
    from analysis.mlflow_source import load_mlflow_sweep

    out = args.out.expanduser().absolute()
    check_out_dir(out)  # refuse a folder that is not ours before the (slow) load
    sweep = load_mlflow_sweep(args.tracking_uri, args.experiment, args.parent_run_id)
    try:
        write_report_dir(out, lambda staging: write_report(sweep, staging))
    except OSError as err:
        raise AnalysisError(f"cannot write the report to {out}: {err.strerror or err}") from err
    return out


def main(argv: Sequence[str] | None = None) -> int:
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    if not debug:  # MLflow/alembic INFO lines are noise around a one-line error
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        args = build_parser().parse_args(argv)
        if not args.experiment and not args.parent_run_id:  # the store's latest sweep
            from analysis.mlflow_source import latest_sweep_experiment

            args.experiment = latest_sweep_experiment(args.tracking_uri)
        out = run(args)
    except AnalysisError as err:
        if debug:
            traceback.print_exc()
        print("error: " + " ".join(str(err).split()), file=sys.stderr)  # exactly one line
        return EXIT_ERROR
    except Exception as err:  # a bug, or a library failing in a way not foreseen: still one line
        if debug:
            traceback.print_exc()
        text = " ".join(str(err).split())
        print(
            f"error: unexpected {type(err).__name__}: {text} (rerun with --debug for details)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    print(f"report written to {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
