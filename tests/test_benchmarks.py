"""The benchmarks' reference-design baselines compute what the product computes (so the comparison
is honest), and ``benchmarks/run.py`` produces its JSON document."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks.memory import probe
from benchmarks.reference import MaterialisedToRA, materialise, materialised, reference_backward
from benchmarks.steps import build_setup, ours_backward, ours_step, reference_step
from mtsam.adapters import ToRALinear
from mtsam.adapters.inject import _out_blocks

ROOT = Path(__file__).resolve().parents[1]
TORA = {"type": "tora", "ranks": [4, 4, 2], "dropout": 0.0}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny shapes: a second thread only adds spin-waiting when the 2 shared cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _layer(parts, seed=0):
    torch.manual_seed(seed)
    base = nn.Linear(16, 48)
    layer = ToRALinear(base, 3, (4, 4, 2), scaling=0.5, out_blocks=_out_blocks(base, parts))
    with torch.no_grad():
        layer.G.normal_(0, 0.3)
    return layer


def _grads(tensors):
    out = [t.grad.clone() for t in tensors]
    for t in tensors:
        t.grad = None
    return out


@pytest.mark.parametrize("parts", [("q", "k", "v"), ("q", "v")])
@pytest.mark.parametrize("index", [1, "per_sample"])
def test_materialised_layer_equals_tora_output_and_grads(parts, index):
    layer = _layer(parts)
    reference = MaterialisedToRA(layer)
    x = torch.randn(6, 5, 16, requires_grad=True)
    task_index = torch.tensor([0, 2, 1, 1, 0, 2]) if index == "per_sample" else index
    grad = torch.randn(6, 5, 48)
    tensors = [x, layer.G, layer.U1, layer.U2, layer.U3]

    ours = layer(x, task_index)
    ours.backward(grad)
    ours_grads = _grads(tensors)
    ref = reference(x, task_index)
    ref.backward(grad)
    torch.testing.assert_close(ref, ours, rtol=1e-5, atol=1e-5)
    for a, b in zip(_grads(tensors), ours_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_materialised_tensor_slices_are_the_task_updates():
    layer = _layer(("q", "k", "v"))
    delta = materialise(layer)
    assert delta.shape == (16, 48, 3)
    for t in range(3):
        torch.testing.assert_close(layer.scaling * delta[:, :, t].t(), layer.delta_weight(t))


def test_materialised_context_swaps_and_restores():
    setup = build_setup("tiny", 64, TORA, 1, (24, 32), torch.device("cpu"))
    qkv = setup.model.image_encoder.blocks[0].attn.qkv
    with materialised(setup.model):
        assert isinstance(setup.model.image_encoder.blocks[0].attn.qkv, MaterialisedToRA)
    assert setup.model.image_encoder.blocks[0].attn.qkv is qkv


def _perturbed_setup():
    # Identity normal head: L2-normalising the near-zero normals of a random decoder divides by
    # |v| ≈ eps and turns float noise into large gradient differences (as in test_model.py).
    heads = {"normal": "identity"}
    setup = build_setup("tiny", 64, TORA, 2, (24, 32), torch.device("cpu"), seed=3, heads=heads)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # G = 0 at init would leave U1/U2/U3 without gradient
        for name, p in setup.model.named_parameters():
            if name.endswith(".G"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return setup


def test_reference_per_task_loop_equals_stacked_step():
    """B = 2 and T = 3: same losses and same gradients for every trainable parameter."""
    setup = _perturbed_setup()
    named = [(n, p) for n, p in setup.model.named_parameters() if p.requires_grad]
    ours_losses = ours_backward(setup)
    reached = [(n, p) for n, p in named if p.grad is not None]  # SAM's unused decoder heads are not
    params = [p for _, p in reached]
    ours_grads = _grads(params)
    ref_losses = reference_backward(setup)
    assert all(p.grad is not None for p in params)
    assert all(p.grad is None for _, p in named if all(p is not q for q in params))
    ref_grads = _grads(params)
    torch.testing.assert_close(ref_losses, ours_losses, rtol=1e-5, atol=1e-6)
    adapter = [g for (n, _), g in zip(reached, ours_grads) if n.rsplit(".", 1)[-1] in ("G", "U1", "U2", "U3")]
    assert len(adapter) == 4 * len(setup.model.image_encoder.blocks)
    assert all(g.abs().sum() > 0 for g in adapter)
    for a, b in zip(ref_grads, ours_grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)


def test_reference_per_task_loop_matches_in_bf16_autocast():
    """The mixed-precision path (bf16 autocast, as on CUDA; here on CPU): same losses to bf16's
    precision, and every adapter factor gets a finite, non-zero gradient in float32."""
    setup = _perturbed_setup()
    setup.precision = "bf16"
    ours_losses = ours_backward(setup)
    factors = ("G", "U1", "U2", "U3")
    adapter = [p for n, p in setup.model.named_parameters() if n.rsplit(".", 1)[-1] in factors]
    assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in adapter)
    assert all(p.grad.abs().sum() > 0 for p in adapter)
    setup.optimizer.zero_grad(set_to_none=True)
    ref_losses = reference_backward(setup)
    assert ours_losses.dtype == ref_losses.dtype == torch.float32
    torch.testing.assert_close(ref_losses, ours_losses, rtol=2e-2, atol=1e-3)


def test_reference_step_equals_our_step_after_the_optimiser():
    ours, ref = _perturbed_setup(), _perturbed_setup()
    ours_step(ours)
    reference_step(ref)
    # Adam's first step is ±lr·g/(|g|+eps): a gradient at float-noise level can flip an entry, so
    # the tolerance is a tenth of the learning rate (1e-3).
    for a, b in zip(ref.model.parameters(), ours.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_memory_probe_reports_growth():
    spec = {"variant": "tiny", "image_size": 64, "batch": 1, "hw": [24, 32], "adapter": TORA}
    result = probe("ours", spec, torch.device("cpu"), steps=1)
    assert result["peak_mib"] >= 0 and result["method"]


@pytest.mark.parametrize("precision", ["auto", "bf16"])
def test_run_quick_tiny_prints_json(tmp_path, precision):
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable,
        "benchmarks/run.py",
        "--tiny",
        "--repeats",
        "1",
        "--no-memory",
        "--precision",
        precision,
        "--output",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == doc
    for key in ("p1_tora_over_frozen", "p1_materialised_over_factored", "p2_step_over_frozen"):
        assert doc[key]["value"] > 0 and doc[key]["target"]
    assert doc["p3_step_over_reference"]["value"] > 0
    for key in ("p6_agnostic_step_over_tora", "p8_half_depth_over_full"):
        assert doc[key]["value"] > 0 and doc[key]["target"] == "<= " + ("0.45" if "p6" in key else "0.75")
    assert 0 < doc["p7_memory"]["value"] < 0.3 and doc["p7_memory"]["saved_for_backward_gib"]["off"] > 10
    assert doc["p4_sweep_efficiency"]["value"] is None and doc["p4_sweep_efficiency"]["reason"]
    assert doc["meta"]["mode"] == "tiny"
    assert doc["meta"]["precision"] == ("bf16 autocast" if precision == "bf16" else "float32")


def test_sweep_efficiency_from_trial_results(tmp_path):
    from benchmarks.sweep import efficiency, read_trials

    for name, start, epochs in (("trial_a", 100, 3), ("trial_b", 101, 2), ("trial_c", 112, 2)):
        lines = []
        for e in range(1, epochs + 1):
            record = {"train/epoch_time_s": 3.0, "train/eval_time_s": 1.0, "time_total_s": 5.0 * e}
            lines.append(json.dumps({**record, "timestamp": start + 5 * e}))
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text("\n".join(lines) + "\n")
    trials = read_trials(tmp_path)
    result = efficiency(trials, slots=2, command_wall=40.0)
    # inside = 7 epochs x 4 s = 28 s; phase = 122 - 100 = 22 s; 28 / (22 x 2)
    assert result["value"] == round(28 / 44, 3) and result["met"] is False
    assert result["slot_occupancy"] == round(35 / 44, 3)
    assert result["end_to_end_efficiency"] == round(28 / 80, 3)
    assert result["trials"] == 3 and result["per_trial_overhead_s"] == round(7 / 3, 2)
    # a: 100–115, b: 101–111, c: 112–122 → one slot idle 100–101, 111–112 and 115–122
    assert result["idle_slot_s"] == {"head": 1.0, "between": 1.0, "tail": 7.0}


def test_command_phases_from_the_mlflow_store(tmp_path):
    """p4's breakdown of the whole command, read from a real MLflow store the way a sweep leaves it."""
    from mlflow import MlflowClient

    from benchmarks.sweep import command_phases

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("bench-p4")
    t0 = 1_700_000_000.0  # the command starts

    def run(role, start, end=None):
        info = client.create_run(exp, start_time=int(start * 1000), tags={"mtsam.role": role}).info
        if end is not None:
            client.set_terminated(info.run_id, end_time=int(end * 1000))

    run("baseline", t0 - 50, t0 - 40)  # cached by an earlier command: not this command's time
    run("sweep", t0 + 5)
    run("baseline", t0 + 9, t0 + 9.1)  # logged as each single-task run finishes
    run("baseline", t0 + 11, t0 + 11.1)
    run("trial", t0 + 17, t0 + 20.5)
    run("trial", t0 + 17, t0 + 26.4)
    trials = [{"start": t0 + 17.0, "end": t0 + 20.0}, {"start": t0 + 17.2, "end": t0 + 26.0}]
    phases = command_phases(uri, trials, t0, t0 + 31)
    assert phases == {
        "startup": 5.0,
        "baselines": 6.1,
        "trial_workers_start": 5.9,
        "trials_phase": 9.0,
        "end": 5.0,
        "mlflow_after_last_report": 0.4,
    }


def test_pareto_schedulers_hypervolume_and_ratios():
    """The FIFO-vs-MO-ASHA benchmark's arithmetic: 2-D hypervolume (against Optuna's own) and the
    per-seed ratios on one shared reference point (the sweeps themselves take minutes: not here)."""
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    from benchmarks.pareto_schedulers import hypervolume_2d, score

    points = [(41.4, 0.149), (15.5, 0.128), (10.0, 0.128), (-5.0, 0.17), (-120.0, 0.1)]
    ref = (-100.0, 0.2)
    inside = np.array([[-v, c] for v, c in points if v > ref[0]])  # Optuna minimises; drop (-120, ·)
    assert hypervolume_2d(points, ref) == pytest.approx(compute_hypervolume(inside, np.array([100.0, 0.2])))
    assert hypervolume_2d([(1.0, 2.0)], (0.0, 3.0)) == 1.0 and hypervolume_2d([], ref) == 0.0

    def run(scheduler, epochs, front, pruned=(), seed=0):
        front = [{"trial": f"t{n}", "optuna_trial": n, "objective": v, "cost": c} for n, v, c in front]
        params = [{"lr": n} for n in range(4)]
        return {"seed": seed, "scheduler": scheduler, "trial_epochs": epochs, "trials_phase_s": epochs,
                "finished": 4 - len(pruned), "front": front, "pruned": list(pruned),
                "max_cost_any_trial": 1.0, "params": params}  # fmt: skip

    runs = [run("fifo", 16, [(0, 10.0, 0.5), (1, 20.0, 0.9)]), run("mo_asha", 10, [(0, 10.0, 0.5)], [1, 3])]
    doc = score(runs, -100.0)
    assert doc["reference_point"]["cost"] == 1.1
    assert runs[0]["hypervolume"] == pytest.approx(110 * 0.4 + 120 * 0.2)
    assert runs[1]["hypervolume_vs_baselines"] == pytest.approx(10 * 0.6)
    (pair,) = doc["per_seed"]
    assert pair["epochs_ratio"] == round(10 / 16, 3) and pair["hv_ratio"] == round(66 / 68, 3)
    assert pair["same_configurations"] and pair["fifo_front_stopped_by_mo_asha"] == ["t1"]
    assert not pair["fronts_equal"] and doc["total_epochs_ratio"] == round(10 / 16, 3)


def test_memory_check_and_gpu_summary_run_on_cpu(tmp_path):
    """The GPU check's Python parts at smoke-test shapes (the GPU itself is not here)."""
    from benchmarks.gpu_summary import summarize
    from benchmarks.memory_check import check

    doc = check("tiny", "cpu", "auto")
    (shape,) = doc["shapes"].values()
    assert shape["ours_estimate_mib"] > 0 and shape["measured_mib"]["ours"] is not None
    assert doc["met"]  # tiny: reported, not judged
    (tmp_path / "memory.json").write_text(json.dumps(doc))
    lines, ok = summarize([str(tmp_path / "memory.json"), str(tmp_path / "missing.json")])
    assert not ok and lines[-1] == f"missing: {tmp_path / 'missing.json'}"
    assert lines[0].startswith("memory tiny@64px B=1: estimate ÷ measured ")
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks/gpu_check.sh")]).returncode == 0
