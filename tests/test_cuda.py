"""The CUDA paths: bf16 autocast training, CUDA checkpoints read back on the CPU, the adapted layer
in bf16 against float32, and the benchmarks' GPU figures (MFU, ``max_memory_allocated``).

These need a CUDA device and are skipped without one (CI has none); the CPU suite covers the same
mixed-precision code through ``train.precision=bf16`` on the CPU. On a GPU machine:
``benchmarks/gpu_check.sh`` runs this file with the full benchmarks (BENCHMARKS.md, "On a GPU").
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_trainer import FAST

from mtsam.config import load_config
from mtsam.trainer import CHECKPOINT, Trainer, read_checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
ROOT = Path(__file__).resolve().parents[1]


def test_trainer_runs_on_cuda_in_bf16_and_resumes_on_the_cpu(tmp_path):
    config = load_config(overrides=[*FAST, "train.epochs=2", "train.device=auto"])
    trainer = Trainer(config, tmp_path / "gpu")
    assert trainer.device.type == "cuda"
    dtypes = set()
    trainer.model.image_encoder.blocks[0].attn.qkv.register_forward_hook(
        lambda module, args, out: dtypes.add(out.dtype)
    )
    trainer.fit()
    assert dtypes == {torch.bfloat16}
    assert all(p.device.type == "cuda" for p in trainer.model.parameters())
    last = trainer.history[-1]
    assert all(torch.isfinite(torch.tensor(v)) for k, v in last.items() if k.startswith(("train/", "val/")))
    state = read_checkpoint(tmp_path / "gpu" / CHECKPOINT)
    assert state["rng"]["cuda"] and all(t.device.type == "cpu" for t in state["model"].values())
    # Trained on the GPU, continued on a laptop: the checkpoint loads on the CPU and training goes on.
    cpu = load_config(overrides=[*FAST, "train.epochs=3", "train.device=cpu"])
    resumed = Trainer(cpu, tmp_path / "gpu", resume_from=tmp_path / "gpu" / CHECKPOINT)
    assert resumed.epoch == 2 and resumed.device.type == "cpu"
    gpu_params = dict(trainer.model.named_parameters())
    for name, p in resumed.model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, gpu_params[name].detach().cpu()), name
    resumed.fit()
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]


def test_adapted_layer_in_bf16_matches_float32():
    from benchmarks.layer import layer_inputs, qkv_layers

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    _, tora_cpu, _ = qkv_layers(64, 3, (8, 8, 2), 0.0, cpu)
    _, tora_gpu, _ = qkv_layers(64, 3, (8, 8, 2), 0.0, gpu)
    x, grad, index = layer_inputs(64, 3, 8, cpu)
    y_ref = tora_cpu(x, index)
    y_ref.backward(grad)
    xg, gg = x.detach().to(gpu).requires_grad_(True), grad.to(gpu)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = tora_gpu(xg, index.to(gpu))
    assert y.dtype == torch.bfloat16
    y.backward(gg.to(y.dtype))
    y_ref = y_ref.detach()
    assert (y.float().cpu() - y_ref).norm() / y_ref.norm() < 1e-2  # bf16 keeps 8 bits of mantissa
    for (name, a), b in zip(tora_cpu.named_parameters(), tora_gpu.parameters()):
        if a.requires_grad:
            assert b.grad.dtype == torch.float32, name
            rel = (b.grad.cpu() - a.grad).norm() / a.grad.norm()
            assert rel < 2e-2, (name, float(rel))


def test_a_fractional_trial_cannot_take_more_than_its_share_of_gpu_memory():
    """``resources.gpu_memory: share``: the cap a trial with ``gpu: 0.05`` would get."""
    from mtsam.device import cap_gpu_memory_to

    device = torch.device("cuda", 0)
    total = torch.cuda.get_device_properties(device).total_memory
    cap_gpu_memory_to(0.05, device)
    try:
        with pytest.raises(torch.OutOfMemoryError):
            torch.empty(int(total * 0.10), dtype=torch.uint8, device=device)
        within = torch.empty(int(total * 0.01), dtype=torch.uint8, device=device)
        del within
    finally:
        cap_gpu_memory_to(1.0, device)
        torch.cuda.empty_cache()


def test_benchmarks_report_mfu_and_cuda_memory(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "benchmarks/run.py", "--tiny", "--repeats", "2", "--peak-tflops", "989"]
    proc = subprocess.run([*cmd, "--output", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads(out.read_text())
    assert doc["meta"]["device_type"] == "cuda" and doc["meta"]["precision"] == "bf16 autocast"
    (step,) = doc["details"]["steps"].values()
    assert 0 < step["mfu"]["ours"] < 1
    memory = step["peak_memory"]
    assert memory["ours"]["method"] == "cuda max_memory_allocated" and memory["ours"]["peak_mib"] > 0
