"""Sweep config, search space and CLI checks that need no Ray: fast, in-process (one real subprocess)."""

from __future__ import annotations

import socket
import subprocess
import sys

import optuna
import pytest
import yaml
from conftest import REPO, SEARCH, search_env

from mtsam.config import validate_config
from mtsam.sweep.cli import QUICKSTART_FILE, main
from mtsam.sweep.config import SweepConfig, load_sweep_config
from mtsam.sweep.params import param_name, run_params
from mtsam.sweep.plan import make_plan
from mtsam.sweep.sampler import SpaceSampler, apply_params, flatten, paper_point, space_params
from mtsam.sweep.space import SearchSpace
from mtsam.sweep.tracking import error_reason, run_name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_quickstart_file_is_the_embedded_default():
    from_file, path = load_sweep_config(QUICKSTART_FILE)
    assert path == QUICKSTART_FILE
    assert from_file == SweepConfig()
    embedded, _ = load_sweep_config(None)
    assert embedded == SweepConfig()


@pytest.mark.parametrize("name", ["quickstart", "pareto"])
def test_shipped_configs_resolve(name):
    plan = make_plan(*load_sweep_config(REPO / "tune" / "configs" / f"{name}.yaml"))
    assert plan.tracking_uri.startswith("sqlite:////") and plan.state_dir.is_absolute()
    assert plan.metric == "val/delta_b_task" and plan.mode == "max"
    assert plan.pareto == (name == "pareto")


def test_set_and_flags_override(tmp_path):
    cfg, _ = load_sweep_config(None, ["search.num_samples=3", "base.train.lr=0.002", 'name="x-1"'])
    assert cfg.search.num_samples == 3 and cfg.name == "x-1"
    assert cfg.base == {"train": {"epochs": 8, "lr": 0.002}}  # merged into the default base


def test_dry_run_prints_plan_and_creates_nothing(tmp_path, capsys):
    storage = tmp_path / "runs"
    assert main(["--dry-run", "--storage", str(storage), "--num-samples", "3"]) == 0
    out = capsys.readouterr().out
    expected = ["3 trials", "adapter.r1", "weighting.temperature", "1 CPU", "ASHA"]
    for text in [*expected, "the paper's setting", str(storage / "quickstart"), "mlflow.db"]:
        assert text in out
    assert not storage.exists()


def test_dry_run_says_how_fractional_gpus_share_memory(tmp_path, capsys):
    base = ["--dry-run", "--storage", str(tmp_path / "r"), "--set", "resources.gpu=0.5"]
    assert main([*base, "--address", "ray://head:10001"]) == 0  # GPUs on the cluster, not here
    assert "0.5 GPU (CUDA memory capped at that share) per trial" in capsys.readouterr().out
    assert main([*base, "--address", "ray://head:10001", "--set", "resources.gpu_memory=unlimited"]) == 0
    assert "0.5 GPU (memory not capped) per trial" in capsys.readouterr().out
    assert main([*base, "--set", "resources.gpu_memory=isolated"]) == 2
    assert "resources.gpu_memory" in capsys.readouterr().err


def test_paper_configs_dry_run(tmp_path, capsys):
    data = tmp_path / "nyuv2"
    data.mkdir()
    config = REPO / "tune/configs/nyuv2.yaml"
    args = f"--config {config} --dry-run --storage {tmp_path / 'r'} --set base.model.checkpoint=null"
    args = [*args.split(), "--set", f"base.data.root={data}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "vit_l @ 1024 px" in out and "200 epochs" in out and "1 GPU per trial" in out
    assert "train.device cuda, precision fp32" in out  # the paper preset: the reference runs fp32
    assert "adapter.r1=32" in out  # vit_l is wide enough: the paper's ranks unclipped


def _garbage(tmp_path):
    path = tmp_path / "sam_vit_b.pth"
    path.write_bytes(b"this is not a torch file")
    return path


BAD = {
    "unknown weighting": (["--set", "space.weighting.method=[fixed, nope]"], "unknown weighting 'nope'"),
    "unknown base weighting": (["--set", "base.weighting.method=nope"], "base.weighting"),
    "rank zero in space": (["--set", "space.adapter.ranks.r1=[0, 8]"], "ranks must be integers > 0"),
    "rank zero in base": (["--set", "base.adapter.ranks=[0, 16, 4]"], "base.adapter"),
    "unknown parameter": (["--set", "space.adapter.rnk=[4]"], "unknown parameter 'rnk'"),
    "unknown hyperparameter": (["--set", "space.weighting.dwa={temp: auto}"], "hyperparameter of dwa"),
    "bad range": (["--set", "space.train.lr={low: 0.1, high: 0.01}"], "low must be < high"),
    "invalid corner": (["--set", "space.adapter.dropout={low: 0.0, high: 1.0}"], "invalid run config"),
    "unreadable checkpoint": (["--set", "base.model.checkpoint=GARBAGE"], "not a readable torch checkpoint"),
    "missing checkpoint": (["--set", "base.model.checkpoint=/nonexistent/sam.pth"], "file not found"),
    "unreachable tracking": (["--tracking-uri", "http://127.0.0.1:PORT"], "unreachable"),
    "tracking dir missing": (["--tracking-uri", "sqlite:////nonexistent/dir/mlflow.db"], "does not exist"),
    "nothing to resume": (["--resume"], "nothing to resume"),
    "bad name": (["--name", "a/b"], "name:"),
    "eval every 2": (["--set", "base.train.eval_every=2"], "eval_every"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_fails_fast_with_one_line(case, tmp_path, capsys):
    args, expected = BAD[case]
    args = [a.replace("GARBAGE", str(_garbage(tmp_path))).replace("PORT", str(free_port())) for a in args]
    storage = tmp_path / "runs"
    assert main([*args, "--storage", str(storage)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err, err
    assert not storage.exists()


def test_cli_subprocess_exit_code(tmp_path):
    args = [
        sys.executable,
        str(SEARCH),
        "--storage",
        str(tmp_path / "r"),
        "--set",
        "space.weighting.method=[x]",
    ]
    proc = subprocess.run(args, capture_output=True, text=True, env=search_env(), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: space.weighting") and proc.stderr.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_resume_needs_the_same_config(tmp_path, capsys):
    storage = tmp_path / "runs"
    plan = make_plan(*load_sweep_config(None, [f"storage={storage}"]))
    plan.state_dir.mkdir(parents=True)
    from mtsam.sweep.state import SweepState, write_config

    write_config(plan)
    SweepState("parent", "1").save(plan.state_dir)
    stored = plan.base["train"]["epochs"]
    assert main(["--resume", "--storage", str(storage), "--epochs", str(stored + 1)]) == 2
    err = capsys.readouterr().err
    assert f"differs from the stored one at base.train.epochs (stored {stored}, now {stored + 1})" in err


# ----------------------------------------------------------------------------------- search space
PARETO_SPACE = yaml.safe_load((REPO / "tune/configs/pareto.yaml").read_text())["space"]


def _base():
    return make_plan(*load_sweep_config(None)).base


def test_define_by_run_samples_valid_conditional_configs():
    base = _base()
    space = SearchSpace.model_validate(PARETO_SPACE)
    sampler = SpaceSampler(space, base)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    kinds = set()
    for _ in range(30):
        trial = study.ask()
        params = sampler(trial)  # keyed by space path; the study holds the dotted names
        assert set(trial.params) == {param_name(k) for k in params}
        cfg = validate_config(apply_params(base, params))  # every sample is a valid run config
        kinds.add(cfg.adapter.type)
        has_ranks = any(k.startswith("adapter/ranks/") for k in params)
        assert has_ranks == (params["adapter/type"] == "tora")
        assert ("adapter/rank" in params) == (params["adapter/type"] in ("lora", "shared_lora"))
        fixed = [k for k in params if k.startswith("weighting/fixed/")]
        assert bool(fixed) == (params["weighting/method"] == "fixed")
        if fixed:
            assert len(cfg.weighting.hparams()["weights"]) == 3
        study.tell(trial, 0.0)
    assert kinds == {"tora", "lora", "shared_lora", "none"}


def test_apply_params_switches_adapter_family():
    base = _base()
    sampled = {"adapter/type": "lora", "adapter/rank": 4, "weighting/method": "dwa"}
    cfg = apply_params(base, {**sampled, "weighting/dwa/temperature": 3.0, "train/lr": 0.01})
    assert cfg["adapter"] == {
        "type": "lora",
        "targets": ["q", "k", "v"],
        "dropout": 0.1,
        "blocks": "all",
        "freeze_prefix_norms": False,
        "rank": 4,
    }
    assert cfg["weighting"] == {"method": "dwa", "temperature": 3.0}
    validate_config(cfg)
    nested = {"adapter": {"ranks": {"r1": 8}}, "train": {"lr": 0.1}}
    assert flatten(nested) == {"adapter/ranks/r1": 8, "train/lr": 0.1}


def test_paper_point_respects_space_and_width():
    base = _base()
    point = paper_point(SweepConfig().space, base)
    assert point["adapter/ranks/r1"] == 32 and point["adapter/ranks/r3"] == 4
    assert point["weighting/method"] == "fixed"
    assert "train/lr" not in point  # the quickstart's lr range (1.5e-3..6e-3) does not admit the paper's 1e-3
    wide = SearchSpace.model_validate({"train": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}})
    assert paper_point(wide, base)["train/lr"] == 1e-3
    assert [point[f"weighting/fixed/weights/{t}"] for t in ("semantic", "depth", "normal")] == [1.0, 1.0, 4.0]
    narrow = SearchSpace.model_validate({"adapter": {"ranks": {"r1": {"low": 1, "high": 8, "type": "int"}}}})
    assert "adapter/ranks/r1" not in paper_point(narrow, base)  # 32 is outside the declared range
    names = [p.name for p in space_params(SweepConfig().space, base)]
    assert names[:3] == ["adapter/ranks/r1", "adapter/ranks/r2", "adapter/ranks/r3"]


def test_tracking_helpers():
    ranks = {"adapter/ranks/r1": 32, "adapter/ranks/r2": 32, "adapter/ranks/r3": 4}
    cfg = validate_config(apply_params(_base(), {**ranks, "train/lr": 1e-3}))
    from mtsam.config import config_to_dict

    data = config_to_dict(cfg)
    assert run_name(data, "abcde") == "tora-r32.32.4-fixed-lr1e-3-abcde"
    flat = run_params({**data, "baseline": {"val": {}}, "faults": {"crash_at_epoch": 2}})
    assert (flat["adapter.r1"], flat["adapter.r2"], flat["adapter.r3"]) == ("32", "32", "4")
    assert flat["train.lr"] == "0.001" and flat["adapter.targets"] == "q,k,v"
    assert [flat[f"weighting.weights.{t}"] for t in ("semantic", "depth", "normal")] == ["1", "1", "4"]
    assert not [k for k in flat if k.startswith(("faults", "baseline")) or k == "adapter.ranks"]
    assert "None" not in flat.values() and not [v for v in flat.values() if "{" in v or "\n" in v]
    last = "mtsam.trainer.NonFiniteLoss: non-finite loss at epoch 2"
    assert error_reason(f'Failure # 1\nTraceback:\n  File "x.py", line 3\n{last}\n') == last
    # a lost Ray Train worker: Ray's "key: value" lines about the dead actor are not the exception
    gloo = "RuntimeError: Read error [127.0.0.1]:33711: Connection reset by peer"
    dead = "\tclass_name: RayTrainWorker\n\tpid: 6250\n\tip: 10.0.0.5\nThe actor is dead because it died."
    assert error_reason(f"ray.train.WorkerGroupError: Training failed:\n{gloo}\n{dead}") == gloo


def test_study_file_is_a_journal_and_an_older_sqlite_study_is_kept(tmp_path):
    """New sweeps keep the Optuna study in a journal file; a sweep started with sqlite resumes on it."""
    from mtsam.sweep.study import dashboard_location, study_file, study_storage, tidy_study

    journal = study_file(tmp_path)
    assert journal.name == "optuna.journal" and dashboard_location(journal) == str(journal)
    study = optuna.create_study(study_name="s", storage=study_storage(journal))
    study.ask()  # left RUNNING, as by a killed driver
    study.tell(study.ask(), 1.0)
    tidy_study(journal, "s")
    reread = optuna.load_study(study_name="s", storage=study_storage(journal))  # replays the file
    assert [t.state.name for t in reread.trials] == ["FAIL", "COMPLETE"]

    older = tmp_path / "older"
    older.mkdir()
    sqlite = optuna.create_study(study_name="s", storage=f"sqlite:///{older / 'optuna.db'}")
    sqlite.tell(sqlite.ask(), 2.0)
    assert study_file(older) == older / "optuna.db"
    assert dashboard_location(study_file(older)) == f"sqlite:///{older / 'optuna.db'}"
    assert isinstance(study_storage(study_file(older)), optuna.storages.RDBStorage)
    kept = optuna.load_study(study_name="s", storage=study_storage(study_file(older)))
    assert [t.value for t in kept.trials] == [2.0]
