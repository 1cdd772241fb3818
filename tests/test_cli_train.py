"""`python -m mtsam.train` and `python -m mtsam.predict` from the outside."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from mtsam import predict, train

FAST = [
    "--set",
    "data.scenes.train=8",
    "--set",
    "data.val_fraction=0.25",
    "--set",
    "data.scenes.val=2",
    "--set",
    "data.scenes.height=32",
    "--set",
    "data.scenes.width=48",
]


def test_dry_run_json_summary():
    proc = subprocess.run(
        [sys.executable, "-m", "mtsam.train", "--dry-run", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(proc.stdout)["parameters"]
    assert summary["trainable"] < summary["total"] and summary["adapter"] > 0


def test_train_writes_run_directory_then_predict(tmp_path, capsys):
    run = tmp_path / "run"
    assert train.main(["--epochs", "1", "--out", str(run), *FAST]) == 0
    out = capsys.readouterr().out
    assert "parameters:" in out and "epoch 1" in out and "miou↑" in out and "best adapter" in out
    assert {"config.yaml", "metrics.jsonl", "checkpoint.pt", "best_adapter.pt"} <= {
        p.name for p in run.iterdir()
    }
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert record["epoch"] == 1 and "val/normal/within_11.25" in record
    # A second run into the same directory must not silently overwrite it.
    assert train.main(["--epochs", "1", "--out", str(run), *FAST]) == 2
    assert "already holds a run" in capsys.readouterr().err
    # Resume continues to epoch 2.
    assert train.main(["--epochs", "2", "--out", str(run), "--resume", *FAST]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2

    png = tmp_path / "room.png"
    Image.fromarray((np.random.default_rng(0).random((30, 40, 3)) * 255).astype(np.uint8)).save(png)
    npy = tmp_path / "scan.npy"
    np.save(npy, np.random.default_rng(1).random((24, 32, 3)).astype(np.float32))
    pred_dir = tmp_path / "pred"
    assert (
        predict.main(["--checkpoint", str(run), "--images", str(png), str(npy), "--out", str(pred_dir)]) == 0
    )
    names = {p.name for p in pred_dir.iterdir()}
    for stem in ("room", "scan"):
        for task in ("semantic", "depth", "normal"):
            assert f"{stem}_{task}.png" in names and f"{stem}_{task}.npy" in names
    assert np.load(pred_dir / "room_semantic.npy").shape == (13, 30, 40)
    assert np.load(pred_dir / "scan_normal.npy").shape == (3, 24, 32)
    # bf16 autocast (the CUDA default; on CPU here): the same predictions to bf16's precision.
    bf16_dir = tmp_path / "pred-bf16"
    args = ["--checkpoint", str(run), "--images", str(npy), "--out", str(bf16_dir), "--precision", "bf16"]
    assert predict.main(args) == 0
    full, half = np.load(pred_dir / "scan_depth.npy"), np.load(bf16_dir / "scan_depth.npy")
    assert half.dtype == np.float32 and not np.array_equal(full, half)
    np.testing.assert_allclose(half, full, rtol=0.05, atol=0.05 * np.abs(full).max())

    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    empty = tmp_path / "pred2"
    assert predict.main(["--checkpoint", str(run), "--images", str(bad), "--out", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: image") and "notes.txt" in err and len(err.splitlines()) == 1
    assert not empty.exists()


def test_config_errors_are_one_line(tmp_path, capsys):
    cases = {
        ("--set", "adapter.ranks=[0,4,2]"): "adapter.ranks",
        ("--set", "weighting.method=magic"): "unknown method 'magic'",
        ("--set", "train.lr=-1"): "train.lr",
        ("--set", "data.tasks=[semantic,colour]"): "unknown task 'colour'",
        ("--set", "model.checkpoint=/nope/sam.pth"): "model.checkpoint",
        ("--set", "model.image_size=100"): "model.image_size",
        ("--set", "data.dataset=nyuv2", "--set", f"data.root={tmp_path}/missing"): "data.root",
        ("--set", "bogus.key=1"): "bogus",
        (
            "--set",
            "weighting.temperature=-1",
            "--set",
            "weighting.method=dwa",
            "--set",
            "weighting.weights=null",
        ): "weighting.temperature",
    }
    for args, expected in cases.items():
        assert train.main(["--dry-run", *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and expected in err, (args, err)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: [unclosed\n")
    assert train.main(["--config", str(bad_yaml), "--dry-run"]) == 2
    assert "malformed YAML" in capsys.readouterr().err
