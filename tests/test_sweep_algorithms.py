"""Contract suite over every sampler and every scheduler a sweep can name (the optuna style: one
test, every implementation), plus the combinations that are refused before any trial starts.

Samplers run through ``StudySearcher`` on the sweep's real Optuna journal, driven the way Tune
drives it (no Ray needed); schedulers run a real Ray Tune sweep each with the sweep's own searcher,
the scheduler ``build_scheduler`` makes from the plan, and a toy trainable that reports and
checkpoints per epoch like ours (the full trainable under PBT and MO-ASHA is in
test_sweep_population.py).
"""

from __future__ import annotations

import optuna
import pytest

from mtsam.errors import ConfigError
from mtsam.sweep.cli import main
from mtsam.sweep.config import load_sweep_config
from mtsam.sweep.plan import make_plan
from mtsam.sweep.samplers import build_sampler, sampler_name
from mtsam.sweep.schedulers import build_scheduler, decision_epochs, scheduler_name
from mtsam.sweep.study import study_storage
from mtsam.sweep.tuning import build_searcher

NUMERIC_SPACE = {
    "train": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}, "warmup_ratio": {"low": 0, "high": 0.1}}
}
PARETO = ["search.mode=pareto"]
# name → (overrides, Optuna sampler class)
SAMPLERS = {
    "tpe": ([], "TPESampler"),
    "tpe-multivariate": (["search.multivariate=true"], "TPESampler"),
    "random": (["search.sampler=random"], "RandomSampler"),
    "qmc": (["search.sampler=qmc"], "QMCSampler"),
    "cmaes": (["search.sampler=cmaes", f"space={NUMERIC_SPACE}"], "CmaEsSampler"),
    "gp": (["search.sampler=gp"], "GPSampler"),
    "nsga2": (PARETO, "NSGAIISampler"),
    "nsga3": ([*PARETO, "search.sampler=nsga3"], "NSGAIIISampler"),
    "tpe-pareto": ([*PARETO, "search.sampler=tpe"], "TPESampler"),
}
EPOCHS, TRIALS = 3, 5


def _plan(tmp_path, overrides, name="s"):
    args = [f"storage={tmp_path / 'runs'}", f"name={name}", f"base.train.epochs={EPOCHS}"]
    args += [f"search.num_samples={TRIALS}", *overrides]
    plan = make_plan(*load_sweep_config(None, args))
    plan.state_dir.mkdir(parents=True, exist_ok=True)  # what the runner does before the study opens
    return plan


def _objective(config: dict, epoch: int) -> dict:
    lr = config.get("train", {}).get("lr", 3e-3)
    return {"epoch": epoch, "val/delta_b_task": 1000 * lr * epoch, "model/trainable_params": 1e6 * lr}


@pytest.mark.parametrize("case", sorted(SAMPLERS))
def test_every_sampler_keeps_the_study_contract(case, tmp_path):
    overrides, cls = SAMPLERS[case]
    plan = _plan(tmp_path, overrides)
    assert type(build_sampler(plan)).__name__ == cls
    searcher = build_searcher(plan).searcher  # the StudySearcher inside the ConcurrencyLimiter
    configs = {}
    for i in range(TRIALS):
        tid = f"t{i}"
        configs[tid] = searcher.suggest(tid)
        last = 1 if i == TRIALS - 1 else EPOCHS  # the last one is stopped after its first epoch
        for epoch in range(1, last):
            searcher.on_trial_result(tid, _objective(configs[tid], epoch))
        searcher.on_trial_complete(tid, _objective(configs[tid], last))
    study = optuna.load_study(study_name="s", storage=study_storage(plan.study_path))
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE"] * (TRIALS - 1) + ["PRUNED"], states
    assert len(study.directions) == (2 if plan.pareto else 1)
    for trial, tid in zip(study.trials, configs):
        assert trial.user_attrs["ray_trial_id"] == tid
        low, high = (1e-3, 1e-2) if case == "cmaes" else (1.5e-3, 6e-3)
        assert low <= trial.params["train.lr"] <= high
    first = study.trials[0]
    if plan.pareto:
        assert first.values[0] == pytest.approx(_objective(configs["t0"], EPOCHS)["val/delta_b_task"])
    else:
        assert first.value == pytest.approx(_objective(configs["t0"], EPOCHS)["val/delta_b_task"])
        assert sorted(study.trials[-1].intermediate_values) == [1]


# name → overrides; the toy sweep runs with each
SCHEDULERS = {
    "asha": [],
    "mo_asha": PARETO,
    "hyperband": ["scheduler.type=hyperband", "scheduler.reduction_factor=3"],
    "median": ["scheduler.type=median"],
    "pbt": ["scheduler.type=pbt"],
    "pb2": ["scheduler.type=pb2"],
    "fifo": ["scheduler.type=fifo"],
    "fifo-pareto": [*PARETO, "scheduler.type=fifo"],
}


@pytest.fixture(scope="module")
def local_ray():
    import ray

    # "local": a new Ray of our own even where another one runs on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("case", sorted(SCHEDULERS))
def test_every_scheduler_runs_a_sweep_and_keeps_the_study_contract(case, tmp_path, local_ray):
    from ray import tune

    def toy_trainable(config: dict) -> None:  # nested: Ray ships it by value
        """Reports and checkpoints every epoch; continues from the checkpoint Tune hands it (a PBT
        exploit, a HyperBand resume), with the config it is given now."""
        import json
        import tempfile
        from pathlib import Path

        from ray import tune

        start, checkpoint = 0, tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                start = json.loads((Path(folder) / "state.json").read_text())["epoch"]
        for epoch in range(start + 1, EPOCHS + 1):
            lr = config["train"]["lr"]
            result = {
                "epoch": epoch,
                "val/delta_b_task": 1000 * lr * epoch,
                "model/trainable_params": 1e6 * lr,
            }
            result["param/train.lr"] = config["train"]["lr"]
            with tempfile.TemporaryDirectory() as folder:
                (Path(folder) / "state.json").write_text(json.dumps({"epoch": epoch}))
                tune.report(result, checkpoint=tune.Checkpoint.from_directory(folder))

    plan = _plan(tmp_path, ["search.max_concurrent=3", "search.seed=1", *SCHEDULERS[case]], name=case)
    assert scheduler_name(plan) == case.removesuffix("-pareto")
    assert sampler_name(plan) == ("random" if case in ("pbt", "pb2") else "nsga2" if plan.pareto else "tpe")
    assert all(0 < e < EPOCHS for e in decision_epochs(plan))
    single = not plan.pareto
    grid = tune.Tuner(
        toy_trainable,
        tune_config=tune.TuneConfig(
            search_alg=build_searcher(plan),
            scheduler=build_scheduler(plan),
            num_samples=TRIALS,
            metric=plan.metric if single else None,
            mode=plan.mode if single else None,
            reuse_actors=True,
            trial_dirname_creator=lambda trial: trial.trial_id,
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), name=case, verbose=0),
    ).fit()
    assert not grid.errors
    last = {r.metrics["trial_id"]: r.metrics["epoch"] for r in grid}
    study = optuna.load_study(study_name=case, storage=study_storage(plan.study_path))
    assert len(study.trials) == TRIALS and len(last) == TRIALS
    for trial in study.trials:  # stopped below the budget: PRUNED; full budget: COMPLETE
        epoch = last[trial.user_attrs["ray_trial_id"]]
        assert trial.state.name == ("COMPLETE" if epoch == EPOCHS else "PRUNED"), (case, epoch)
    if case in ("fifo", "fifo-pareto", "pbt", "pb2"):
        assert set(last.values()) == {EPOCHS}  # these never stop a trial early


BAD = {
    "cmaes with a categorical space": (["search.sampler=cmaes"], "search.sampler: cmaes samples numeric"),
    "cmaes in a pareto sweep": ([*PARETO, "search.sampler=cmaes", f"space={NUMERIC_SPACE}"], "optimises one"),
    "pbt with a pareto objective": ([*PARETO, "scheduler.type=pbt"], "scheduler.type: pbt ranks trials"),
    "hyperband with a pareto objective": ([*PARETO, "scheduler.type=hyperband"], "scheduler.type: hyperband"),
    "nsga2 with one objective": (["search.sampler=nsga2"], "search.sampler: nsga2 is a multi-objective"),
    "pbt with tpe": (["scheduler.type=pbt", "search.sampler=tpe"], "only draws the first population"),
    "pbt with nothing to mutate": (
        ["scheduler.type=pbt", "space={adapter: {ranks: {r1: [4, 8]}}}"],
        "scheduler.type: pbt mutates lr",
    ),
    "multivariate without tpe": (
        ["search.sampler=random", "search.multivariate=true"],
        "search.multivariate",
    ),
    "unknown sampler": (["search.sampler=bohb"], "search.sampler"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_combinations_are_refused_before_any_trial(case, tmp_path, capsys):
    overrides, expected = BAD[case]
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.").replace("(", r"\(")):
        _plan(tmp_path, overrides)
    storage = tmp_path / "cli"
    args = ["--dry-run", "--storage", str(storage), *[a for o in overrides for a in ("--set", o)]]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected.split(":")[0] in err[0], err
    assert not storage.exists()


@pytest.mark.parametrize(
    "overrides, sampler, scheduler",
    [
        ([], "Optuna TPE", "ASHA (grace 1"),
        (PARETO, "Optuna NSGA-II", "MO-ASHA (grace 1, reduction 2, max 8 epochs, by non-dominated sorting"),
        (["scheduler.type=pbt"], "Optuna random", "PBT (every 1 epochs"),
        (["scheduler.type=median", "search.sampler=qmc"], "Optuna QMC (Sobol)", "median stopping rule"),
    ],
)
def test_dry_run_names_the_sampler_and_scheduler(overrides, sampler, scheduler, tmp_path, capsys):
    args = ["--dry-run", "--storage", str(tmp_path), *[a for o in overrides for a in ("--set", o)]]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"  sampler:    {sampler}" in out and f"  scheduler:  {scheduler}" in out


def test_no_scheduler_pauses_a_trial_at_its_last_epoch(tmp_path):
    """Ray's synchronous HyperBand paused a trial at its final epoch while its bracket waited and
    then never resumed or stopped it: the sweep hung (about 1 run in 8 of the hyperband case above).
    The wrapper every scheduler comes in lets such a trial finish; a pause before it still holds."""
    from types import SimpleNamespace

    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    from mtsam.sweep.schedulers import KeepsStudyEnds

    class Pauses(FIFOScheduler):
        def on_trial_result(self, tune_controller, trial, result):
            return TrialScheduler.PAUSE

    wrapped = KeepsStudyEnds(Pauses(), tmp_path / "optuna.journal", "s", epochs=EPOCHS)
    trial = SimpleNamespace(config={"train": {"lr": 1e-3}})
    assert wrapped.on_trial_result(None, trial, {"epoch": EPOCHS - 1}) == TrialScheduler.PAUSE
    assert wrapped.on_trial_result(None, trial, {"epoch": EPOCHS}) == TrialScheduler.CONTINUE
