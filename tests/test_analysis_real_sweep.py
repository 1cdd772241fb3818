"""analysis/ on the real tiny sweep that the Tune tests run (shared session fixture): the loaders,
the Pareto front, the report CLI and the summary notebook all work on what a sweep really logs."""

from __future__ import annotations

import analysis
from analysis import report
from analysis.notebooks import run_notebook


def test_loads_every_trial_and_epoch(tiny_sweep):
    sweep = analysis.load_sweep(tiny_sweep.tracking_uri, tiny_sweep.experiment)
    assert len(sweep.trials) == tiny_sweep.num_samples
    assert sweep.has_delta_b  # the sweep trained its own single-task baselines
    assert (sweep.trials["trainable_params"] > 0).all()
    per_trial = sweep.history.groupby("trial_id")["epoch"].apply(list)
    for epochs in per_trial:
        assert epochs == list(range(1, len(epochs) + 1))  # every logged epoch once, in order
    ray = analysis.load_ray_sweep(tiny_sweep.exp_path)
    assert len(ray.trials) == tiny_sweep.num_samples
    # where each trial trained: the run tag (MLflow) and the results (Ray) agree
    assert (sweep.trials["device"] == "cpu").all() and (ray.trials["device"] == "cpu").all()


def test_pareto_front_is_the_non_dominated_trials(tiny_sweep):
    trials = analysis.load_sweep(tiny_sweep.tracking_uri, tiny_sweep.experiment).trials
    trials = trials[trials["val_delta_b_task"].notna()]  # the default: validation Δb, never test
    front = set(analysis.pareto_front(trials)["trial_id"])
    rows = list(trials[["trial_id", "val_delta_b_task", "trainable_params"]].itertuples(index=False))

    def dominated(a):
        return any(
            b.val_delta_b_task >= a.val_delta_b_task
            and b.trainable_params <= a.trainable_params
            and (b.val_delta_b_task > a.val_delta_b_task or b.trainable_params < a.trainable_params)
            for b in rows
        )

    assert front == {r.trial_id for r in rows if not dominated(r)}
    assert front


def test_report_and_notebook_on_the_real_store(tiny_sweep, tmp_path):
    out = tmp_path / "report"
    assert (
        report.main(
            [
                "--tracking-uri",
                tiny_sweep.tracking_uri,
                "--experiment",
                tiny_sweep.experiment,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert {"report.html", "trials.csv", "history.csv", "pareto.png"} <= {p.name for p in out.iterdir()}
    html = (out / "report.html").read_text()
    assert "Δb" in html and "val/delta_b_task" in html and "gain(t, m)" in html
    nb_out = tmp_path / "nb"
    run_notebook(
        "sweep_summary", nb_out, tracking_uri=tiny_sweep.tracking_uri, experiment=tiny_sweep.experiment
    )
    pngs = list(nb_out.glob("*.png"))
    assert pngs and all(p.stat().st_size > 1000 for p in pngs)
