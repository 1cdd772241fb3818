"""The same Pareto sweep under FIFO and under MO-ASHA: trial-epochs spent and the final front's hypervolume.

    python benchmarks/pareto_schedulers.py                   # tune/configs/pareto.yaml, seeds 0 1 2
    python benchmarks/pareto_schedulers.py --seeds 0 --num-samples 16 --storage /tmp/keep

For each ``search.seed`` the sweep runs twice through the CLI (``python tune/search.py``, fresh
subprocess: real Ray, Optuna, MLflow sqlite), with ``scheduler.type=fifo`` and with
``scheduler.type=mo_asha`` — same config, seed and number of trials — into one scratch storage and
MLflow store (the single-task baselines are trained by the first sweep and reused by the others, so
every sweep's Δb has the same reference). The order alternates between seeds. Each sweep is then
read back with the analysis package (``analysis.load_mlflow_sweep``: per-trial epochs, outcome,
validation Δb at the selected epoch, cost) and its Optuna study:

- ``trial_epochs``: epochs trained over all trials (FIFO: num_samples × epochs);
- ``finished`` / ``stopped_early`` trials, ``trials_phase_s`` (first trial start to last report,
  from the trials' ``result.json``, as p4) and the whole command's wall time;
- the Pareto front of the **finished** (full-budget) trials on (validation objective ↑, the sweep's
  ``search.cost`` metric ↓), and its hypervolume against one reference point shared by every run:
  objective = ``--ref-delta-b`` (−100 %), cost = 1.1 × the largest cost of any trial of any run.
  ``hypervolume_vs_baselines`` is the same with the objective's reference at Δb = 0 (the
  single-task baselines): the area a front gains over training each task alone.

Both runs of a seed get the same configurations only while scheduling does not change sampling:
NSGA-II breeds a generation from the *completed* trials of the previous one (pruned trials are
invisible to it), so a stop can change later suggestions. Per seed, ``shared_configurations`` counts
the Optuna trial numbers with the same parameters in both studies (``same_configurations``: all);
``fifo_front_stopped_by_mo_asha`` names FIFO's front members among those that MO-ASHA stopped early.
Prints one JSON document (``--output`` also writes it).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(ROOT))

from benchmarks import emit  # noqa: E402
from benchmarks.sweep import read_trials, run_search  # noqa: E402

CONFIG = ROOT / "tune" / "configs" / "pareto.yaml"
SCHEDULERS = ("fifo", "mo_asha")
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "pareto_schedulers.json"
COST_MARGIN = 1.1


def hypervolume_2d(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by ``points`` (objective ↑, cost ↓) and bounded by ``ref`` (objective, cost).

    Points that do not beat the reference in both coordinates add nothing."""
    inside = sorted((c, v) for v, c in points if v > ref[0] and c < ref[1])
    area, best = 0.0, ref[0]
    for (cost, value), nxt in zip(inside, [c for c, _ in inside[1:]] + [ref[1]]):
        best = max(best, value)  # the best objective at this cost or cheaper
        area += (nxt - cost) * (best - ref[0])
    return area


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _study_trials(storage: Path, name: str) -> list:
    import optuna

    from mtsam.sweep.study import study_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=study_storage(storage / name / "optuna.journal"))
    return sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)


def read_run(storage: Path, name: str) -> dict:
    """One finished sweep: per-trial epochs, outcomes, the full-budget front (hypervolume later)."""
    import analysis
    from analysis.outcome import counts, full_budget
    from analysis.pareto import pareto_front

    sweep = analysis.load_mlflow_sweep(f"sqlite:///{storage / 'mlflow.db'}", name)
    trials, objective = sweep.trials, sweep.objective
    (_, _), (cost, cost_sense) = [o.rsplit(":", 1) for o in sweep.tags["mtsam.objectives"].split(",")]
    assert cost_sense == "min", sweep.tags["mtsam.objectives"]
    senses = {objective.column: objective.mode, cost: "min"}
    front = pareto_front(full_budget(trials), senses)
    stopped = trials[trials["outcome"] == "stopped_early"]["stopped_at_epoch"].dropna().astype(int)
    study = _study_trials(storage, name)
    rays = {t.user_attrs.get("ray_trial_id"): t.number for t in study}
    return {
        "name": name,
        "objective": f"{objective.key} ({objective.mode}; trials column {objective.column})",
        "cost": f"{cost} (min)",
        "trials": len(trials),
        "trial_epochs": int(trials["epochs"].sum()),
        "full_budget_epochs": int(trials["epochs_planned"].max() * len(trials)),
        **{k: v for k, v in counts(trials).items() if k in ("finished", "stopped_early", "failed")},
        "stopped_at_epoch": {str(e): int(n) for e, n in sorted(stopped.value_counts().items())},
        "front": [
            {
                "trial": row["run_name"],
                "optuna_trial": rays.get(row["trial_id"]),
                "objective": round(float(row[objective.column]), 3),
                "cost": float(row[cost]),
            }
            for _, row in front.iterrows()
        ],
        "max_cost_any_trial": float(trials[cost].max()),
        "params": [t.params for t in study],
        "pruned": sorted(t.number for t in study if t.state.name == "PRUNED"),
        "nsga2_generations": sorted(
            {g for t in study if (g := t.system_attrs.get("NSGAIISampler:generation")) is not None}
        ),
    }


def sweep_once(args, storage: Path, seed: int, scheduler: str) -> dict:
    name = f"pareto-{scheduler}-s{seed}"
    overrides = [f"scheduler.type={scheduler}", f"search.seed={seed}"]
    overrides += [f"search.num_samples={args.num_samples}"] if args.num_samples else []
    overrides += [f"base.train.epochs={args.epochs}"] if args.epochs else []
    failed, wall, _ = run_search(storage, name, overrides, args.timeout, config=Path(args.config).resolve())
    if failed:
        raise RuntimeError(f"{name}: {failed}")
    run = read_run(storage, name)
    results = read_trials(storage / name)  # Ray's per-epoch result.json: the trials' own clock
    run.update(
        seed=seed,
        scheduler=scheduler,
        command_wall_s=round(wall, 1),
        trials_phase_s=round(max(t["end"] for t in results) - min(t["start"] for t in results), 1),
        trial_time_s=round(sum(t["total_s"] for t in results), 1),
        result_json_epochs=sum(t["epochs"] for t in results),
    )
    return run


def score(runs: list[dict], ref_objective: float) -> dict:
    """Hypervolumes against one reference point for all runs, and per-seed MO-ASHA ÷ FIFO."""
    ref_cost = COST_MARGIN * max(r["max_cost_any_trial"] for r in runs)
    for r in runs:
        pts = [(p["objective"], p["cost"]) for p in r["front"]]
        r["hypervolume"] = round(hypervolume_2d(pts, (ref_objective, ref_cost)), 4)
        r["hypervolume_vs_baselines"] = round(hypervolume_2d(pts, (0.0, ref_cost)), 4)
    by = {(r["seed"], r["scheduler"]): r for r in runs}
    pairs = []
    for seed in sorted({r["seed"] for r in runs}):
        fifo, mo = by[(seed, "fifo")], by[(seed, "mo_asha")]
        shared = {n for n, (a, b) in enumerate(zip(fifo["params"], mo["params"])) if a == b}
        pair = {
            "seed": seed,
            "epochs": {"fifo": fifo["trial_epochs"], "mo_asha": mo["trial_epochs"]},
            "epochs_ratio": _ratio(mo["trial_epochs"], fifo["trial_epochs"]),
            "hypervolume": {"fifo": fifo["hypervolume"], "mo_asha": mo["hypervolume"]},
            "hv_ratio": _ratio(mo["hypervolume"], fifo["hypervolume"]),
            "hv_vs_baselines_ratio": _ratio(mo["hypervolume_vs_baselines"], fifo["hypervolume_vs_baselines"]),
            "trials_phase_ratio": _ratio(mo["trials_phase_s"], fifo["trials_phase_s"]),
            "finished": {"fifo": fifo["finished"], "mo_asha": mo["finished"]},
            "same_configurations": len(shared) == len(fifo["params"]) == len(mo["params"]),
            "shared_configurations": len(shared),  # Optuna trial numbers with the same parameters
            # FIFO front members whose configuration MO-ASHA also trained, and stopped early
            "fifo_front_stopped_by_mo_asha": [
                p["trial"] for p in fifo["front"] if p["optuna_trial"] in shared & set(mo["pruned"])
            ],
            "fronts_equal": [(p["objective"], p["cost"]) for p in fifo["front"]]
            == [(p["objective"], p["cost"]) for p in mo["front"]],
        }
        pairs.append(pair)

    def spread(key: str) -> dict:
        values = [p[key] for p in pairs if p[key] is not None]
        if not values:
            return {"median": None}
        return {"median": round(statistics.median(values), 3), "min": min(values), "max": max(values)}

    total = {s: sum(r["trial_epochs"] for r in runs if r["scheduler"] == s) for s in SCHEDULERS}
    return {
        "reference_point": {
            "objective": ref_objective,
            "cost": round(ref_cost, 6),
            "rule": f"objective {ref_objective:g} (Δb in %), cost {COST_MARGIN} × the largest cost of any "
            "trial of any run; hypervolume_vs_baselines: objective 0 (the single-task baselines)",
        },
        "epochs_ratio": spread("epochs_ratio"),
        "hv_ratio": spread("hv_ratio"),
        "hv_vs_baselines_ratio": spread("hv_vs_baselines_ratio"),
        "trials_phase_ratio": spread("trials_phase_ratio"),
        "total_trial_epochs": total,
        "total_epochs_ratio": _ratio(total["mo_asha"], total["fifo"]),
        "per_seed": pairs,
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/pareto_schedulers.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(CONFIG), help="sweep YAML (default: tune/configs/pareto.yaml)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="search.seed values (0 1 2)")
    p.add_argument("--num-samples", type=int, help="trials per sweep (default: the config's)")
    p.add_argument("--epochs", type=int, help="epochs per trial (default: the config's)")
    p.add_argument("--ref-delta-b", type=float, default=-100.0, help="hypervolume reference, objective")
    p.add_argument("--storage", help="keep the sweeps' Ray/Optuna/MLflow files here (default: scratch)")
    p.add_argument("--timeout", type=float, default=1800, help="give up on a sweep after this many s")
    p.add_argument("--output", default=str(DEFAULT_OUTPUT), help="JSON file to write ('' = none)")
    return p.parse_args(argv)


def bench(args, storage: Path) -> dict:
    runs, start = [], time.perf_counter()
    started = datetime.datetime.now().isoformat(timespec="seconds")
    for i, seed in enumerate(args.seeds):
        for scheduler in SCHEDULERS if i % 2 == 0 else reversed(SCHEDULERS):
            runs.append(sweep_once(args, storage, seed, scheduler))
            print(
                f"seed {seed} {scheduler}: {runs[-1]['trial_epochs']} epochs, "
                f"{runs[-1]['finished']} finished, {runs[-1]['command_wall_s']} s",
                file=sys.stderr,
            )
    doc = {
        "meta": {
            "started": started,
            "config": os.path.relpath(args.config, ROOT),
            "seeds": args.seeds,
            "num_samples": runs[0]["trials"],
            "epochs": runs[0]["full_budget_epochs"] // max(1, runs[0]["trials"]),
            "order": [f"s{r['seed']}:{r['scheduler']}" for r in runs],
            "cpus": os.cpu_count(),
            "loadavg_end": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
            "wall_s": round(time.perf_counter() - start, 1),
        },
        **score(runs, args.ref_delta_b),
    }
    for r in runs:
        del r["params"]
    doc["runs"] = runs
    return doc


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.storage:
        storage = Path(args.storage).resolve()
        storage.mkdir(parents=True, exist_ok=True)
        doc = bench(args, storage)
    else:
        with tempfile.TemporaryDirectory(prefix="mtsam-bench-pareto-") as tmp:
            doc = bench(args, Path(tmp))
    emit(doc, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
