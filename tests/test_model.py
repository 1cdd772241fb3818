"""MTSAM model: stacked forward, gradients, parameter counts, adapter-only checkpoints."""

import pytest
import torch

from mtsam import build_mtsam, load_adapter, orthogonality_loss, save_adapter
from mtsam.errors import CheckpointError, ConfigError
from mtsam.model import decode_channels

TASKS = {"semantic": 5, "depth": 1, "normal": 3}
TORA = {"type": "tora", "ranks": [4, 4, 2], "dropout": 0.0}


def perturb_adapters(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".G") or name.endswith(".B"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.fixture(scope="module")
def tora_model():
    model = build_mtsam("tiny", TASKS, TORA, image_size=64).eval()
    perturb_adapters(model)
    return model


def test_outputs_shapes_and_heads(tora_model):
    out = tora_model(torch.rand(2, 3, 40, 56))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "semantic": (2, 5, 40, 56),
        "depth": (2, 1, 40, 56),
        "normal": (2, 3, 40, 56),
    }
    torch.testing.assert_close(out["semantic"].exp().sum(1), torch.ones(2, 40, 56))
    unit = (out["normal"].norm(dim=1) - 1).abs() < 1e-4
    assert unit.float().mean() > 0.99  # all but raw vectors shorter than the head's epsilon


def test_stacked_multitask_forward_equals_separate_per_task():
    """B = 2: the one-pass task-major stack pairs each embedding with the right decoder."""
    # Identity heads: normalising near-zero random-init normals would amplify float noise.
    tora_model = build_mtsam("tiny", TASKS, TORA, image_size=64, heads={"normal": "identity"}).eval()
    perturb_adapters(tora_model)
    images = torch.rand(2, 3, 48, 64)
    out = tora_model(images)
    for task in TASKS:
        torch.testing.assert_close(out[task], tora_model.forward_task(images, task), rtol=1e-4, atol=1e-5)
        for i in range(2):  # and each image alone
            torch.testing.assert_close(
                out[task][i : i + 1], tora_model.forward_task(images[i : i + 1], task), rtol=1e-4, atol=1e-5
            )


def test_tasks_really_differ_through_the_adapter(tora_model):
    images = torch.rand(1, 3, 48, 64)
    x, _ = tora_model.preprocess(images)
    e0, e1 = tora_model.encode(x, 0), tora_model.encode(x, 1)
    assert (e0 - e1).abs().max() > 1e-6


def test_batched_decoder_equals_sam_predict_masks(tora_model):
    dec = tora_model.decoders["semantic"]
    emb = torch.randn(2, 64, 4, 4)
    pe = tora_model.pe_layer((4, 4)).unsqueeze(0)
    dense_rows = torch.randn(5, 64)
    ours = decode_channels(dec, emb, pe, dense_rows)
    for i in range(2):
        sparse = torch.empty(5, 0, 64)
        dense = dense_rows[:, :, None, None].expand(-1, -1, 4, 4)
        masks, _ = dec.predict_masks(emb[i : i + 1], pe, sparse, dense)
        torch.testing.assert_close(ours[i], masks[:, 0], rtol=1e-4, atol=1e-5)


def test_adapted_model_at_init_equals_frozen_model():
    images = torch.rand(2, 3, 48, 64)
    # "none" encodes B images, the adapters 3B (no shared trunk): float summation order differs,
    # which normalising near-zero random-init normals would amplify, hence identity heads.
    heads = {"normal": "identity"}
    plain = build_mtsam("tiny", TASKS, {"type": "none"}, image_size=64, seed=3, heads=heads).eval()
    for adapter in (TORA, {"type": "lora", "rank": 2}, {"type": "shared_lora", "rank": 2}):
        adapted = build_mtsam("tiny", TASKS, adapter, image_size=64, seed=3, heads=heads).eval()
        a, b = adapted(images), plain(images)
        for t in TASKS:
            torch.testing.assert_close(a[t], b[t])


@pytest.mark.parametrize(
    "adapter", [TORA, {"type": "lora", "rank": 2}, {"type": "shared_lora", "rank": 2}, {"type": "none"}]
)
def test_only_intended_parameters_get_gradients(adapter):
    model = build_mtsam("tiny", TASKS, adapter, image_size=64)
    perturb_adapters(model)
    out = model(torch.rand(2, 3, 32, 32))
    (sum(v.mean() for v in out.values()) + orthogonality_loss(model)).backward()
    for name, p in model.named_parameters():
        intended = (
            ".G" in name
            or ".U" in name
            or name.endswith(".A")
            or name.endswith(".B")
            or "norm" in name
            or name.startswith("image_encoder.neck.1")
            or name.startswith("image_encoder.neck.3")
            or name == "no_mask"
            or name.startswith("decoders.")
        )
        assert p.requires_grad == intended, name
        if not p.requires_grad:
            assert p.grad is None, f"frozen {name} got a gradient"
    adapter_grads = [p.grad for n, p in model.named_parameters() if n.endswith((".G", ".U1", ".A"))]
    assert all(g is not None and g.abs().sum() > 0 for g in adapter_grads)
    assert model.no_mask.grad.abs().sum() > 0


def test_parameter_summary_vit_l_tora_count():
    model = build_mtsam("vit_l", TASKS | {"semantic": 13}, {"type": "tora", "ranks": [32, 32, 4]})
    summary = model.parameter_summary()
    assert summary["adapter"] == 3_244_320
    assert summary["trainable"] < summary["total"] * 0.06
    assert summary["total"] == summary["trainable"] + summary["frozen"]


def test_shared_parameters_exclude_task_specific():
    model = build_mtsam("tiny", TASKS, TORA, image_size=64)
    shared = {id(p) for p in model.shared_parameters()}
    names = {n for n, p in model.named_parameters() if id(p) in shared}
    assert any(n.endswith(".G") for n in names) and not any(n.endswith(".U3") for n in names)
    assert not any(n.startswith("decoders") or n == "no_mask" for n in names)


def test_adapter_only_checkpoint_round_trip(tmp_path, tora_model):
    path = save_adapter(tora_model, tmp_path / "adapter.pt", extra={"epoch": 3})
    stored = torch.load(path, weights_only=True)
    assert set(stored["state"]) == {n for n, p in tora_model.named_parameters() if p.requires_grad}
    loaded, extra = load_adapter(path)
    images = torch.rand(2, 3, 48, 64)
    a, b = tora_model(images), loaded.eval()(images)
    for t in TASKS:
        assert torch.equal(a[t], b[t])
    assert extra == {"epoch": 3}


def test_adapter_checkpoint_errors(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_adapter(tmp_path / "junk.pt")
    torch.save(
        {"format": "mtsam-adapter", "format_version": 99, "config": {}, "state": {}}, tmp_path / "v.pt"
    )
    with pytest.raises(CheckpointError, match="format version 99"):
        load_adapter(tmp_path / "v.pt")


def test_build_errors():
    with pytest.raises(ConfigError, match="model.variant"):
        build_mtsam("vit_x", TASKS, None)
    with pytest.raises(ConfigError, match="image_size"):
        build_mtsam("tiny", TASKS, None, image_size=100)
    with pytest.raises(ConfigError, match="adapter.ranks"):
        build_mtsam("tiny", TASKS, {"type": "tora", "ranks": [500, 4, 2]})
    with pytest.raises(ConfigError, match="tasks.depth"):
        build_mtsam("tiny", {"depth": 0}, None)


def test_no_mask_rows_equal_by_default_jitter_breaks_the_symmetry(tmp_path):
    """The paper: every per-channel row is SAM's vector, so a task's channels start identical (the
    normals one constant ±(1,1,1)/√3). ``no_mask_jitter`` (seeded) makes them start apart."""
    images = torch.rand(1, 3, 32, 48)
    paper = build_mtsam("tiny", TASKS, TORA, image_size=64).eval()
    assert torch.equal(paper.no_mask, paper.no_mask[:1].expand_as(paper.no_mask))
    with torch.no_grad():
        normal = paper(images)["normal"]
    torch.testing.assert_close(normal.abs(), torch.full_like(normal, 3**-0.5))
    jittered = build_mtsam("tiny", TASKS, TORA, image_size=64, no_mask_jitter=1.0).eval()
    again = build_mtsam("tiny", TASKS, TORA, image_size=64, no_mask_jitter=1.0)
    assert torch.equal(jittered.no_mask, again.no_mask)  # seeded by the model seed
    spread = (jittered.no_mask - paper.no_mask).detach().std() / paper.no_mask[0].detach().std()
    assert 0.8 < float(spread) < 1.2
    with torch.no_grad():
        normal = jittered(images)["normal"]
    assert float((normal.abs() - 3**-0.5).abs().max()) > 0.1
    # everything but the table is the same model, and the adapter file rebuilds it exactly
    assert all(torch.equal(a, b) for a, b in zip(paper.decoders.parameters(), jittered.decoders.parameters()))
    save_adapter(jittered, tmp_path / "a.pt")
    loaded, _ = load_adapter(tmp_path / "a.pt")
    assert torch.equal(loaded.no_mask, jittered.no_mask)
