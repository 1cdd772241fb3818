"""analysis/ without MLflow: the Ray-directory fallback, param parsing and table exports."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

import analysis
from analysis.params import parse_param, typed_series

BASE = {"semantic": {"miou": 0.40, "pix_acc": 0.80}, "depth": {"abs_err": 0.50, "rel_err": 0.20}}
RAY_NOISE = {"training_iteration": 0, "time_total_s": 1.5, "pid": 7, "hostname": "h", "config": {"x": 1}}


def _trial(root, name, params, results, error=None, torn_line=False):
    d = root / name
    d.mkdir(parents=True)
    (d / "params.json").write_text(json.dumps(params))
    lines = [
        json.dumps({**RAY_NOISE, "training_iteration": r["epoch"], "trial_id": name[:5], **r})
        for r in results
    ]
    if torn_line:
        lines.append('{"epoch": 3, "val/sem')  # a trial killed while writing
    (d / "result.json").write_text("\n".join(lines) + "\n")
    if error:
        (d / "error.txt").write_text(f"Traceback (most recent call last):\n  ...\n{error}\n")


def _epoch(epoch, miou, abs_err, **extra):
    metrics = {"val/semantic/miou": miou, "val/semantic/pix_acc": 0.8, "val/depth/abs_err": abs_err}
    metrics.update({"val/depth/rel_err": 0.2, "train/loss/total": 1.0 / epoch, "best/epoch": epoch})
    return {"epoch": epoch, **metrics, **extra}


@pytest.fixture
def ray_dir(tmp_path):
    root = tmp_path / "storage" / "ray-sweep"
    tora = {"adapter": {"type": "tora", "ranks": [32, 32, 4]}, "train": {"lr": 0.001, "amp": False}}
    tora.update(weighting={"method": "equal"}, epochs=2)  # top-level "epochs" clashes with a meta column
    test_a = {"test/semantic/miou": 0.44, "test/semantic/pix_acc": 0.84, "test/depth/abs_err": 0.45}
    test_a["test/depth/rel_err"] = 0.22
    _trial(
        root,
        "a_00000_0",
        tora,
        [
            _epoch(1, 0.3, 0.6, **{"model/trainable_params": 3_000_000}),
            _epoch(2, 0.4, 0.5, **test_a, done=True),
        ],
    )
    lora = {"adapter": {"type": "lora", "rank": 8}, "train": {"lr": 0.002, "amp": True}}
    lora["weighting"] = {"method": "dwa"}
    test_b = {"test/semantic/miou": 0.40, "test/semantic/pix_acc": 0.80, "test/depth/abs_err": 0.40}
    test_b["test/depth/rel_err"] = 0.20
    _trial(
        root,
        "b_00001_1",
        lora,
        [
            _epoch(1, 0.35, 0.4, **test_b, **{"model/trainable_params": 1_000_000}),
            _epoch(2, 0.3, 0.7, **{"best/epoch": 1}),
        ],
        torn_line=True,
    )
    _trial(root, "c_00002_2", tora, [_epoch(1, 0.1, 0.9)], error="RuntimeError: CUDA out of memory")
    (root / "experiment_state-2025.json").write_text("{}")  # Ray's own files are not trials
    (root / "tuner.pkl").write_bytes(b"\x80")
    return root


def test_ray_directory_fallback(ray_dir):
    sweep = analysis.load_ray_sweep(ray_dir, baseline={"test": BASE})
    t = sweep.trials.set_index("trial_id")
    assert sweep.name == "ray-sweep" and list(t.index) == ["a_000", "b_000", "c_000"]
    assert t["status"].tolist() == ["FINISHED", "UNKNOWN", "FAILED"]
    assert t.loc["c_000", "status_reason"] == "RuntimeError: CUDA out of memory"
    assert t["adapter"].tolist() == ["tora", "lora", "tora"] and t["weighting"].tolist() == [
        "equal",
        "dwa",
        "equal",
    ]
    assert t.loc["a_000", "adapter.ranks"] == [32, 32, 4] and t["train.lr"].dtype == float
    assert t["train.amp"].dtype == bool and t.loc["b_000", "adapter.rank"] == 8
    assert t.loc["a_000", "trainable_params"] == 3_000_000 and t.loc["b_000", "trainable_params"] == 1_000_000
    assert "training_iteration" not in t.columns and "config" not in t.columns
    assert t.loc["a_000", "param.epochs"] == 2 and t.loc["a_000", "epochs"] == 2  # param vs epochs seen
    # b: epoch 1 stays selected; its test metrics, reported then, are the final ones
    assert t.loc["b_000", "best/val/semantic/miou"] == 0.35 and t.loc["b_000", "val/semantic/miou"] == 0.3
    assert t.loc["b_000", "best_epoch"] == 1 and t.loc["b_000", "test/depth/abs_err"] == 0.40
    # Δb by hand: a gains +10 +5 | +10 −10 → task 100·(0.075 + 0)/2, metric 100·0.15/4
    assert t.loc["a_000", "delta_b_task"] == pytest.approx(100 * 0.075 / 2)
    assert t.loc["a_000", "delta_b_metric"] == pytest.approx(100 * 0.15 / 4)
    # b: 0 0 | +20 0 → task 100·(0 + 0.1)/2
    assert t.loc["b_000", "delta_b_task"] == pytest.approx(5.0) and math.isnan(t.loc["c_000", "delta_b_task"])
    h = sweep.history
    assert len(h) == 5 and h.groupby("trial_id")["epoch"].max().tolist() == [2, 2, 1]
    test_front = analysis.pareto_front(sweep.trials, {"delta_b_task": "max", "trainable_params": "min"})
    assert test_front["trial_id"].tolist() == ["b_000"]  # fewer params, higher test Δb
    # the default ranks on validation: no val baseline here, so val miou (a 0.40 at 3M, b 0.35 at 1M)
    assert analysis.pareto_front(sweep.trials)["trial_id"].tolist() == ["b_000", "a_000"]


def test_ray_directory_baseline_file_and_errors(ray_dir, tmp_path):
    assert analysis.load_ray_sweep(ray_dir).baseline is None
    (ray_dir / "baseline.json").write_text(json.dumps({"test": BASE}))
    assert analysis.load_ray_sweep(ray_dir).has_delta_b
    with pytest.raises(analysis.AnalysisError, match="does not exist"):
        analysis.load_ray_sweep(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(analysis.AnalysisError, match="no trial directories"):
        analysis.load_ray_sweep(tmp_path / "empty")


def test_sweep_where_every_trial_failed_still_reports(tmp_path):
    from analysis.report import write_report

    root = tmp_path / "failed-sweep"
    _trial(
        root, "a_00000_0", {"train": {"lr": 0.1}}, [{"epoch": 1, "train/loss/total": 3.0}], error="NaN loss"
    )
    sweep = analysis.load_ray_sweep(root, baseline={"test": BASE})
    assert not sweep.has_delta_b and any("baseline not applied" in n for n in sweep.notes)
    (tmp_path / "out").mkdir()
    write_report(sweep, tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text()
    assert (
        "no ranking" in html and "NaN loss" in html and (tmp_path / "out" / "learning_curves.png").is_file()
    )


@pytest.mark.parametrize(
    "text, value",
    [
        ("3", 3),
        ("-2", -2),
        ("0.001", 0.001),
        ("1e-3", 1e-3),
        ("True", True),
        ("false", False),
        ("None", None),
        ("[32, 32, 4]", [32, 32, 4]),
        ('{"a": [1, 2]}', {"a": [1, 2]}),
        ('["q", "k"]', ["q", "k"]),
        ("1_000", "1_000"),
        ("(1, 2)", "(1, 2)"),
        ("adam", "adam"),
        ("[not json", "[not json"),
    ],
)
def test_parse_param(text, value):
    parsed = parse_param(text)
    assert parsed == value and type(parsed) is type(value)


def test_typed_series_dtypes():
    assert typed_series([1, None]).dtype == "Int64"
    assert typed_series([1, 2.5]).dtype == float
    assert typed_series([True, None]).dtype == "boolean"
    assert typed_series([[1], [2]]).dtype == object
    assert typed_series([1, "a"]).dtype == object


def test_exports(tmp_path):
    frame = pd.DataFrame(
        {"method": ["a|b", "c_d"], "semantic miou ↑": [0.41234, math.nan], "Δb task (%) ↑": [1.5, -2.0]}
    )
    frame["trainable params"] = pd.Series([1_234_567, None], dtype="Int64")
    md = analysis.to_markdown(frame)
    assert md.splitlines()[1] == "| --- | ---: | ---: | ---: |"
    assert r"| a\|b | 0.412 | 1.500 | 1,234,567 |" in md and "| c_d | – | -2.000 | – |" in md
    tex = analysis.to_latex(frame)
    assert r"semantic miou $\uparrow$" in tex and r"$\Delta$b task (\%)" in tex and r"c\_d" in tex
    paths = analysis.export_table(frame, tmp_path / "t")
    assert [p.name for p in paths] == ["t.md", "t.tex", "t.csv"]
    assert pd.read_csv(tmp_path / "t.csv")["semantic miou ↑"].iloc[0] == 0.41234  # full precision
