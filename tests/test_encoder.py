"""The encoder pass: shared trunk + task branches, adapter.blocks, frozen prefix, checkpointing."""

import pytest
import torch

from mtsam import build_mtsam
from mtsam.config import load_config
from mtsam.errors import ConfigError

TASKS = {"semantic": 5, "depth": 1, "normal": 3}
ADAPTERS = {
    "tora": {"type": "tora", "ranks": [4, 4, 2], "dropout": 0.0},
    "lora": {"type": "lora", "rank": 4},
    "shared_lora": {"type": "shared_lora", "rank": 4},
    "none": {"type": "none"},
}


def perturb(model, seed=1):
    """Non-zero adapter updates and rel-pos tables, so routing mistakes show in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".G", ".B", "rel_pos_h", "rel_pos_w")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def stacked_reference(model, x, tasks):
    """Today's (pre-trunk) encoder pass: SAM's own forward over the task-major stack."""
    ids = torch.tensor([model.task_names.index(t) for t in tasks]).repeat_interleave(x.shape[0])
    model.routing.index = ids
    try:
        emb = model.image_encoder(x.repeat(len(tasks), 1, 1, 1))
    finally:
        model.routing.index = None
    return emb.view(len(tasks), x.shape[0], *emb.shape[1:])


@pytest.mark.parametrize("kind", list(ADAPTERS))
@pytest.mark.parametrize("blocks", ["all", "last:1"])
def test_trunk_equals_stacked_pass(kind, blocks):
    adapter = dict(ADAPTERS[kind], **({} if kind == "none" else {"blocks": blocks}))
    model = build_mtsam("small", TASKS, adapter, image_size=64).eval()
    perturb(model)
    x, _ = model.preprocess(torch.rand(2, 3, 48, 64))
    tasks = ["normal", "semantic", "depth"]  # not the model's order: index = task position
    with torch.no_grad():
        torch.testing.assert_close(model.encode_tasks(x, tasks), stacked_reference(model, x, tasks))
    layout = model.encoder_layout()
    if kind in ("none", "shared_lora"):
        assert layout["branch_block"] is None
    else:
        assert layout["branch_block"] == (0 if blocks == "all" else 3)
    assert layout["adapted_blocks"] == ([] if kind == "none" else [0, 1, 2, 3] if blocks == "all" else [3])


def test_trunk_gradients_equal_stacked_pass():
    model = build_mtsam("small", TASKS, dict(ADAPTERS["tora"], blocks="last:2"), image_size=64).train()
    perturb(model)
    x, _ = model.preprocess(torch.rand(2, 3, 48, 64))
    params = [p for p in model.image_encoder.parameters() if p.requires_grad]
    weights = torch.randn(3, 2, 128, 4, 4)

    def grads(fn):
        loss = (fn() * weights).sum()
        return torch.autograd.grad(loss, params)

    new = grads(lambda: model.encode_tasks(x, list(TASKS)))
    old = grads(lambda: stacked_reference(model, x, list(TASKS)))
    for a, b in zip(new, old):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=5e-5)  # summation order (float32, ~1e-5 apart)


def test_task_agnostic_encoder_runs_each_image_once():
    model = build_mtsam("small", TASKS, ADAPTERS["shared_lora"], image_size=64).eval()
    batches = []
    hook = model.image_encoder.blocks[-1].register_forward_hook(lambda m, i, o: batches.append(o.shape[0]))
    model(torch.rand(2, 3, 48, 64))
    hook.remove()
    assert batches == [2]  # not 3 × 2


def test_blocks_select_layers_and_count_parameters():
    full = build_mtsam("small", TASKS, ADAPTERS["tora"], image_size=64).parameter_summary()
    half = build_mtsam("small", TASKS, dict(ADAPTERS["tora"], blocks="last:2"), image_size=64)
    listed = build_mtsam("small", TASKS, dict(ADAPTERS["lora"], blocks=[0, 2]), image_size=64)
    assert half.parameter_summary()["adapter"] * 2 == full["adapter"]
    assert listed.encoder_layout()["adapted_blocks"] == [0, 2]
    with pytest.raises(ConfigError, match=r"adapter.blocks: last:9 asks for 9 blocks; this encoder has 4"):
        build_mtsam("small", TASKS, dict(ADAPTERS["tora"], blocks="last:9"), image_size=64)
    with pytest.raises(ConfigError, match=r"adapter.blocks \(vit_l\): block 24 does not exist"):
        load_config(overrides=["model.variant=vit_l", "model.checkpoint=null", "adapter.blocks=[0, 24]"])
    with pytest.raises(ConfigError, match=r"adapter.blocks: expected 'all', 'last:K'"):
        load_config(overrides=["adapter.blocks=half"])


def test_frozen_prefix_runs_without_graph():
    adapter = dict(ADAPTERS["tora"], blocks="last:1", freeze_prefix_norms=True)
    model = build_mtsam("small", TASKS, adapter, image_size=64).train()
    assert model.encoder_layout()["graph_free_blocks"] == 3
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith("image_encoder.blocks.0.") for n in trainable)
    assert any(n.startswith("image_encoder.blocks.3.norm1") for n in trainable)
    grads = []
    hook = model.image_encoder.blocks[2].register_forward_hook(lambda m, i, o: grads.append(o.requires_grad))
    out = model(torch.rand(1, 3, 48, 64))
    hook.remove()
    assert grads == [False]  # the prefix's output carries no graph
    sum(v.sum() for v in out.values()).backward()  # the adapted block and decoders still train
    assert model.image_encoder.blocks[3].attn.qkv.U1.grad is not None


@pytest.mark.parametrize("kind", ["tora", "shared_lora"])
def test_activation_checkpointing_same_losses_and_gradients(kind):
    """Dropout on (train mode): checkpointing replays the same RNG state, so results are identical."""
    adapter = dict(ADAPTERS[kind], dropout=0.2, **({"blocks": "last:3"} if kind == "tora" else {}))
    model = build_mtsam("small", TASKS, adapter, image_size=64, heads={"normal": "identity"}).train()
    perturb(model)
    images = torch.rand(2, 3, 48, 64)
    params = [p for p in model.parameters() if p.requires_grad]

    def run(enabled):
        model.set_activation_checkpointing(enabled)
        torch.manual_seed(7)
        out = model(images)
        loss = sum((v * (k + 1)).square().mean() for k, v in enumerate(out.values()))
        return loss.detach(), torch.autograd.grad(loss, params, allow_unused=True)  # iou head: unused

    loss_off, grads_off = run(False)
    loss_on, grads_on = run(True)
    assert model.activation_checkpointing
    torch.testing.assert_close(loss_on, loss_off, rtol=0, atol=0)
    assert sum(g is not None for g in grads_on) > len(params) // 2
    for a, b in zip(grads_on, grads_off):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
