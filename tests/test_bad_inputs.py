"""Bad input across every CLI: non-zero exit, one clear line naming the field/file, no traceback,
and nothing half-written (no MLflow run, no experiment directory, no partial output).

Table-driven: each case is (CLI, argv built from the fixtures, text the error line must contain).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis import report
from mtsam import predict, train
from mtsam.data.mtan import train_val_split
from mtsam.data.scenes import write_dataset
from mtsam.sweep import cli as search
from mtsam.variants import build_sam

CLIS = {"train": train.main, "predict": predict.main, "report": report.main, "search": search.main}
FAST = ["--set", "data.scenes.train=8", "--set", "data.scenes.val=2", "--set", "data.val_fraction=0.25"]


@dataclass
class Env:
    root: Path
    out: Path  # every CLI writes under here; it must stay empty after a failure

    def p(self, name: str) -> str:
        return str(self.root / name)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    torch.manual_seed(0)
    torch.save(build_sam("tiny").state_dict(), root / "sam_tiny.pth")
    torch.save(build_sam("small").state_dict(), root / "sam_small.pth")
    (root / "sam_trunc.pth").write_bytes((root / "sam_tiny.pth").read_bytes()[:4096])
    write_dataset(root / "data", train=4, val=2, height=32, width=48)
    for name, damage in (("data_missing", "missing"), ("data_corrupt", "corrupt"), ("data_shape", "shape")):
        shutil.copytree(root / "data", root / name)
        target = root / name / "train" / "depth" / "2.npy"
        if damage == "missing":
            target.unlink()
        elif damage == "corrupt":
            target.write_bytes(target.read_bytes()[:60])
        else:
            np.save(target, np.zeros((7, 7, 1), np.float32))
    # NaN pixels: in a validation sample (carved from train/ as the trainer does) and in a predict input
    shutil.copytree(root / "data", root / "data_nan")
    val_ids = train_val_split(4, 0.5, 0)[1]
    image = np.load(root / "data_nan" / "train" / "image" / f"{val_ids[0]}.npy")
    image[3, 5, 1] = np.nan
    np.save(root / "data_nan" / "train" / "image" / f"{val_ids[0]}.npy", image)
    np.save(root / "nan_image.npy", image)
    (root / "bad.yaml").write_text("model: {variant: tiny\n")
    (root / "unknown_key.yaml").write_text("modle: {variant: tiny}\n")
    (root / "notes.txt").write_text("hello")
    # A trained run for the predict cases (1 tiny epoch).
    assert train.main(["--epochs", "1", "--out", str(root / "run"), *FAST]) == 0
    # An empty but real MLflow store for the report cases.
    import mlflow

    mlflow.MlflowClient(f"sqlite:///{root}/mlflow.db").create_experiment("exists-but-empty")
    return Env(root, root / "out")


def nyu(env, name):
    return ["--set", "data.dataset=nyuv2", "--set", f"data.root={env.p(name)}"]


def sweep(env, *extra):
    """A sweep whose every destination lies under env.out (checked empty afterwards)."""
    return [
        "--storage",
        str(env.out / "runs"),
        "--tracking-uri",
        f"sqlite:///{env.out}/mlflow.db",
        "--name",
        "bad",
        *extra,
    ]


CASES = [
    # python -m mtsam.train
    ("train", lambda e: ["--config", e.p("bad.yaml"), "--dry-run"], "malformed YAML"),
    ("train", lambda e: ["--config", e.p("unknown_key.yaml"), "--dry-run"], "modle: unknown key"),
    ("train", lambda e: ["--config", e.p("missing.yaml")], "missing.yaml: file not found"),
    ("train", lambda e: ["--set", "train.epochs=many", "--dry-run"], "train.epochs"),
    ("train", lambda e: ["--set", "adapter.ranks=[0,8,2]", "--dry-run"], "adapter.ranks"),
    ("train", lambda e: ["--set", "adapter.ranks=[500,8,2]", "--dry-run"], "adapter.ranks: R1=500"),
    ("train", lambda e: ["--set", "adapter.type=prefix", "--dry-run"], "adapter"),
    ("train", lambda e: ["--set", "weighting.method=magic", "--dry-run"], "unknown method 'magic'"),
    ("train", lambda e: ["--set", "data.tasks=[semantic,edges]", "--dry-run"], "unknown task 'edges'"),
    (
        "train",
        lambda e: [
            "--set",
            "weighting.method=dwa",
            "--set",
            "weighting.weights=null",
            "--set",
            "weighting.temperature=-2",
            "--dry-run",
        ],
        "weighting.temperature",
    ),
    ("train", lambda e: ["--set", "train.lr=-0.1", "--dry-run"], "train.lr"),
    ("train", lambda e: ["--epochs", "0", "--dry-run"], "train.epochs"),
    ("train", lambda e: ["--set", "model.checkpoint=/no/such/sam.pth", "--dry-run"], "model.checkpoint"),
    ("train", lambda e: ["--set", f"model.checkpoint={e.p('sam_trunc.pth')}", "--dry-run"], "sam_trunc.pth"),
    (
        "train",
        lambda e: ["--set", f"model.checkpoint={e.p('sam_small.pth')}", "--dry-run"],
        "does not match variant tiny",
    ),
    ("train", lambda e: ["--set", "model.image_size=100", "--dry-run"], "model.image_size"),
    ("train", lambda e: nyu(e, "no_such_data"), "data.root"),
    (
        "train",
        lambda e: [*nyu(e, "data_missing"), "--out", str(e.out / "r")],
        "data_missing/train/depth/2.npy",
    ),
    (
        "train",
        lambda e: [*nyu(e, "data_corrupt"), "--out", str(e.out / "r")],
        "data_corrupt/train/depth/2.npy",
    ),
    ("train", lambda e: [*nyu(e, "data_shape"), "--out", str(e.out / "r")], "found 7×7×1"),
    ("train", lambda e: ["--resume", "--out", str(e.out / "r")], "no checkpoint to resume"),
    # python -m mtsam.predict
    (
        "predict",
        lambda e: ["--checkpoint", e.p("run"), "--images", e.p("notes.txt"), "--out", str(e.out / "p")],
        "notes.txt",
    ),
    (
        "predict",
        lambda e: ["--checkpoint", e.p("nowhere"), "--images", e.p("notes.txt"), "--out", str(e.out / "p")],
        "--checkpoint",
    ),
    (
        "predict",
        lambda e: [
            "--checkpoint",
            e.p("sam_tiny.pth"),
            "--images",
            e.p("data/val/image/0.npy"),
            "--out",
            str(e.out / "p"),
        ],
        "not an MTSAM adapter checkpoint",
    ),
    (
        "predict",
        lambda e: ["--checkpoint", e.p("run"), "--images", e.p("nan_image.npy"), "--out", str(e.out / "p")],
        "nan_image.npy: 1 non-finite pixel value(s)",
    ),
    # python -m analysis.report
    (
        "report",
        lambda e: [
            "--tracking-uri",
            f"sqlite:///{e.root}/mlflow.db",
            "--experiment",
            "nope",
            "--out",
            str(e.out / "rep"),
        ],
        "nope",
    ),
    (
        "report",
        lambda e: [
            "--tracking-uri",
            f"sqlite:///{e.root}/mlflow.db",
            "--experiment",
            "exists-but-empty",
            "--out",
            str(e.out / "rep"),
        ],
        "exists-but-empty",
    ),
    (
        "report",
        lambda e: ["--tracking-uri", "http://127.0.0.1:9", "--experiment", "x", "--out", str(e.out / "rep")],
        "127.0.0.1:9",
    ),
    # python tune/search.py
    ("search", lambda e: sweep(e, "--set", "base.weighting.method=magic"), "magic"),
    ("search", lambda e: sweep(e, "--set", "base.adapter.ranks=[8,0,2]"), "ranks"),
    ("search", lambda e: sweep(e, "--num-samples", "0"), "num_samples"),
    ("search", lambda e: sweep(e, "--set", "resources.gpu=1.5"), "resources.gpu"),
    ("search", lambda e: sweep(e, "--set", "resources.gpu=1"), "GPU"),
    ("search", lambda e: sweep(e, "--set", "base.model.checkpoint=/no/sam.pth"), "checkpoint"),
    ("search", lambda e: [*sweep(e), "--tracking-uri", "http://127.0.0.1:9"], "127.0.0.1:9"),
    (
        "search",
        lambda e: [
            "--storage",
            e.p("notes.txt/runs"),  # root ignores permission bits: a path below a file
            "--tracking-uri",
            f"sqlite:///{e.out}/mlflow.db",
            "--name",
            "bad",
        ],
        "storage: ",
    ),
    ("search", lambda e: sweep(e, "--resume"), "resume"),
    ("search", lambda e: sweep(e, "--config", e.p("bad.yaml")), "malformed YAML"),
]


@pytest.mark.parametrize("cli,argv,expected", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input(env, capsys, tmp_path, cli, argv, expected):
    env.out = tmp_path / "out"  # fresh per case: MLflow caches one engine per store URI
    env.out.mkdir()
    code = CLIS[cli](argv(env))
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code != 0, f"exit 0 for bad input; stdout: {captured.out[-500:]}"
    assert "Traceback" not in captured.err, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert expected in err, err
    left = sorted(str(p.relative_to(env.out)) for p in env.out.rglob("*"))
    assert not left, f"half-written output after a failed {cli}: {left}"


def test_debug_shows_traceback(env, capsys):
    with pytest.raises(Exception, match="unknown method"):
        train.main(["--set", "weighting.method=magic", "--dry-run", "--debug"])


def test_nan_image_in_the_validation_split_fails_naming_the_file(env, capsys, tmp_path):
    """Before: a finite-looking mIoU and exit 0. Now: one error line naming the file, no best adapter."""
    out = tmp_path / "run"
    argv = [*nyu(env, "data_nan"), "--set", "data.val_fraction=0.5", "--epochs", "1", "--out", str(out)]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip()
    val_id = train_val_split(4, 0.5, 0)[1][0]
    assert len(err.splitlines()) == 1 and err.startswith("error: image "), err
    assert f"data_nan/train/image/{val_id}.npy: 1 non-finite pixel value(s)" in err, err
    assert not (out / "best_adapter.pt").exists()
    # the same through DataLoader workers, which wrap the error in "Caught DataError in ... worker"
    argv = [*argv[:-1], str(tmp_path / "workers"), "--set", "data.num_workers=1"]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"data_nan/train/image/{val_id}.npy: 1 non-finite" in err, err


@pytest.mark.parametrize("task", ["semantic", "depth", "normal"])
def test_meters_refuse_non_finite_predictions(task):
    from mtsam.errors import NonFiniteError
    from mtsam.metrics import DepthMeter, NormalMeter, SegmentationMeter

    meter, channels = {
        "semantic": (SegmentationMeter(3), 3),
        "depth": (DepthMeter(), 1),
        "normal": (NormalMeter(), 3),
    }[task]
    pred = torch.rand(2, channels, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4)) if task == "semantic" else torch.rand(2, channels, 4, 4) + 0.1
    meter.update(pred, target)  # finite: accepted
    pred[1, 0, 2, 2] = float("nan") if task != "depth" else float("inf")
    with pytest.raises(NonFiniteError, match=f"{task} prediction holds 1 non-finite"):
        meter.update(pred, target)


def test_non_finite_evaluation_is_never_the_best_epoch(tmp_path):
    """A model whose output turns NaN at epoch 2: the run fails there; epoch 1 stays the best and
    best_adapter.pt is epoch 1's, never a NaN evaluation's."""
    from mtsam.config import load_config
    from mtsam.errors import NonFiniteError
    from mtsam.trainer import Trainer

    config = load_config(overrides=[a for a in FAST if a != "--set"] + ["train.epochs=2"])
    trainer = Trainer(config, tmp_path / "run")
    forward = trainer.model.forward

    def poisoned(images, *a, **k):
        outputs = forward(images, *a, **k)
        if trainer.epoch >= 2 and not trainer.model.training:
            outputs = {t: torch.full_like(v, float("nan")) for t, v in outputs.items()}
        return outputs

    trainer.model.forward = poisoned
    with pytest.raises(NonFiniteError, match="val evaluation: semantic prediction"):
        trainer.fit()
    assert trainer.best["epoch"] == 1
    assert torch.load(tmp_path / "run" / "best_adapter.pt", weights_only=False)["extra"]["epoch"] == 1
