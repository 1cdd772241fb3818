"""Memory planning: the meta-device estimate, its terms, the fit check and the dry-runs."""

import json
import sys
from pathlib import Path

import pytest
import torch

from mtsam.config import load_config
from mtsam.errors import ConfigError
from mtsam.memory_plan import GIB, estimate_memory, fit_check, refuse_if_too_big

ROOT = Path(__file__).resolve().parents[1]
NYU = {"semantic": 13, "depth": 1, "normal": 3}
TORA = {"type": "tora", "ranks": [32, 32, 4], "dropout": 0.1}


def test_vit_l_terms_checkpointing_trunk_and_blocks():
    """ViT-L 1024 px, T = 3, batch 1, bf16: counted on the meta device in seconds."""
    full = estimate_memory("vit_l", NYU, TORA, 1024, 1, precision="bf16")
    ckpt = estimate_memory("vit_l", NYU, TORA, 1024, 1, precision="bf16", activation_checkpointing=True)
    half = estimate_memory("vit_l", NYU, dict(TORA, blocks="last:12"), 1024, 1, precision="bf16")
    frozen = estimate_memory("vit_l", NYU, {"type": "none"}, 1024, 1, precision="bf16")
    assert 10 * GIB < full.activations < 30 * GIB  # the N² global-attention maps × 3 tasks
    assert ckpt.activations < 0.3 * full.activations
    assert ckpt.activations_without_checkpointing == full.activations
    assert frozen.activations < half.activations < full.activations  # trunk runs once per image
    assert full.weights == pytest.approx(4 * 312e6, rel=0.05)  # float32 master weights
    assert full.optimizer == 2 * full.gradients
    batch4 = estimate_memory("vit_l", NYU, TORA, 1024, 4, precision="bf16")
    assert batch4.activations == pytest.approx(4 * full.activations, rel=0.05)


def test_fit_check_names_what_would_fit():
    config = load_config(
        overrides=[
            "model.variant=vit_l",
            "model.checkpoint=null",
            "model.image_size=1024",
            "data.batch_size=4",
            "adapter.ranks=[32, 32, 4]",
        ]
    )
    problem = fit_check(config, 24e9)
    assert problem.startswith("needs ~") and "22.4 GiB" in problem
    assert "data.batch_size=1 with train.grad_accum=4" in problem
    assert fit_check(config, 80e9) is None or "checkpointing" in fit_check(config, 80e9)
    with pytest.raises(ConfigError, match=r"^memory: vit_l .* needs ~\d+\.\d GiB"):
        refuse_if_too_big(config, torch.device("cuda"), 24e9)
    refuse_if_too_big(config, torch.device("cpu"), 1e9)  # the CPU is not checked


def test_train_dry_run_prints_layout_and_memory(capsys):
    from mtsam.train import main

    assert main(["--dry-run", "--json", "--set", "adapter.blocks=last:1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["encoder"]["adapted_blocks"] == [1] and doc["encoder"]["branch_block"] == 1
    assert doc["memory"]["cuda"]["precision"] == "bf16 autocast"
    assert doc["memory"]["cpu"]["total"] > doc["memory"]["cpu"]["weights"] > 0


def test_sweep_dry_run_refuses_configs_that_do_not_fit(capsys):
    from mtsam.sweep.cli import main

    args = ["--dry-run", "--set", "base.model.variant=vit_l", "--set", "base.model.checkpoint=null"]
    args += ["--set", "base.model.image_size=1024", "--set", "base.data.batch_size=2"]
    args += ["--set", "resources.gpu=1", "--set", "resources.gpu_memory_gb=24"]
    args += ["--set", "space.adapter.blocks=[all, 'last:6']", "--set", "search.paper_point=false"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "memory:     estimated peak per trial on CUDA, 24 GB each:" in out
    assert "blocks all, batch 2: " in out and "REFUSED: needs ~" in out
    assert "blocks last:6, batch 2: " in out


@pytest.mark.slow  # ~30-55 s on 2 shared cores (a fresh process builds and steps a 4-block ViT-B)
def test_estimate_within_20_percent_of_measured_cpu_peak():
    """Coarse: a fresh process's peak RSS growth over two training steps (benchmarks/memory.py)."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import memory
    from benchmarks.steps import TASKS

    spec = {"variant": "vit_b_short", "image_size": 256, "batch": 1, "hw": [288, 384], "adapter": TORA}
    measured = memory.measure(["ours"], spec, torch.device("cpu"), 1, "fp32")["ours"]["peak_mib"]
    est = estimate_memory("vit_b_short", TASKS, TORA, 256, 1, (288, 384), "fp32").training_state / 2**20
    assert 0.8 <= est / measured <= 1.2, (est, measured)


def test_train_flops_follow_blocks_and_the_trunk():
    from mtsam.flops import train_flops_per_image as flops

    tora = dict(TORA, ranks=[8, 8, 2])
    full = flops("small", NYU, tora, 128, (96, 128))
    half = flops("small", NYU, dict(tora, blocks="last:2"), 128, (96, 128))
    agnostic = flops("small", NYU, {"type": "shared_lora", "rank": 4}, 128, (96, 128))
    ckpt = flops("small", NYU, tora, 128, (96, 128), activation_checkpointing=True)
    assert agnostic < half < full < ckpt  # checkpointing pays with recomputation


def test_pareto_cost_is_selectable():
    from mtsam.sweep.config import load_sweep_config
    from mtsam.sweep.plan import make_plan

    plan = make_plan(*load_sweep_config(ROOT / "tune/configs/pareto.yaml"))
    assert plan.objectives[1] == ("model/train_gflops_per_image", "min")

    def cost(*overrides):
        return make_plan(*load_sweep_config(None, ["search.mode=pareto", *overrides])).objectives[1][0]

    assert cost("search.cost=peak_memory") == "model/est_peak_memory_gib"
    assert cost() == "model/trainable_params"


def test_trials_report_only_the_cost_the_sweep_minimises():
    from mtsam.sweep.trainable import cost_metrics

    config = load_config()
    assert cost_metrics(config, "cpu", None) == {}
    (flops,) = cost_metrics(config, "cpu", "train_flops").items()
    (memory,) = cost_metrics(config, "cuda", "peak_memory").items()
    assert flops[0] == "model/train_gflops_per_image" and flops[1] > 0
    assert memory[0] == "model/est_peak_memory_gib" and 0 < memory[1] < 1
