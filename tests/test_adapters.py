"""ToRA / LoRA layers: math, init, q/k/v selection, routing."""

import pytest
import torch
from torch import nn

from mtsam import LoRALinear, ToRALinear
from mtsam.adapters import ToRAConfig, parse_adapter_config
from mtsam.adapters.inject import _out_blocks


def tucker_delta(layer: ToRALinear, t: int) -> torch.Tensor:
    """Independent reconstruction: full ΔW tensor (d_in, d_out_eff, T) = G ×1 U1 ×2 U2 ×3 U3."""
    full = torch.einsum("abc,ia,ob,tc->iot", layer.G, layer.U1, layer.U2, layer.U3)
    return layer.scaling * full[:, :, t].t()  # (d_out_eff, d_in)


def make_layer(parts=("q", "k", "v"), d=12, tasks=3, ranks=(4, 5, 2), dropout=0.0):
    torch.manual_seed(0)
    base = nn.Linear(d, 3 * d)
    layer = ToRALinear(base, tasks, ranks, scaling=0.5, dropout=dropout, out_blocks=_out_blocks(base, parts))
    with torch.no_grad():
        layer.G.normal_()
    return layer


def expand_rows(layer, delta_eff):
    full = torch.zeros(layer.out_features, layer.in_features)
    row = 0
    for a, b in layer.out_blocks:
        full[a:b] = delta_eff[row : row + b - a]
        row += b - a
    return full


@pytest.mark.parametrize("parts", [("q", "k", "v"), ("q", "v"), ("k",)])
def test_tora_factored_equals_tucker_reconstruction(parts):
    layer = make_layer(parts)
    x = torch.randn(3, 5, 12)
    for t in range(3):
        expected_w = layer.base.weight + expand_rows(layer, tucker_delta(layer, t))
        expected = x @ expected_w.t() + layer.base.bias
        torch.testing.assert_close(layer(x, t), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer.delta_weight(t), expand_rows(layer, tucker_delta(layer, t)))


def test_tora_mixed_per_sample_task_indices():
    layer = make_layer()
    x = torch.randn(4, 6, 12)
    index = torch.tensor([2, 0, 1, 2])
    out = layer(x, index)
    for i, t in enumerate(index.tolist()):
        torch.testing.assert_close(out[i], layer(x[i : i + 1], t)[0], rtol=1e-5, atol=1e-5)
    # Windowed attention folds windows into the batch image-major: index expands by repeat.
    folded = layer(x.reshape(8, 3, 12), index)
    torch.testing.assert_close(folded.reshape(4, 6, -1), out, rtol=1e-5, atol=1e-5)


def test_tora_starts_as_frozen_layer_and_unselected_rows_are_zero():
    base = nn.Linear(12, 36)
    layer = ToRALinear(base, 3, (4, 4, 2), out_blocks=_out_blocks(base, ("q", "v")))
    x = torch.randn(2, 7, 12)
    torch.testing.assert_close(layer(x, 1), base(x))
    with torch.no_grad():
        layer.G.normal_()
    delta = layer.delta_weight(1)
    assert torch.all(delta[12:24] == 0), "k rows must be exactly zero when k is not targeted"
    assert delta[:12].abs().sum() > 0 and delta[24:].abs().sum() > 0


def test_tora_parameter_names_and_shapes():
    layer = make_layer(("q", "v"), d=12, tasks=3, ranks=(4, 5, 2))
    assert layer.G.shape == (4, 5, 2) and layer.U1.shape == (12, 4)
    assert layer.U2.shape == (24, 5) and layer.U3.shape == (3, 2)
    assert not layer.base.weight.requires_grad


def test_tora_forward_never_materialises_full_tensor(monkeypatch):
    """The training path must not build the d_in × d_out × T tensor (reference design)."""
    layer = make_layer(d=64, ranks=(4, 4, 2))
    big = 64 * 192 * 3
    seen = []
    orig = torch.Tensor.__torch_function__

    def spy(func, types, args=(), kwargs=None):
        out = orig(func, types, args, kwargs or {})
        if isinstance(out, torch.Tensor) and out.numel() >= big:
            seen.append((getattr(func, "__name__", func), tuple(out.shape)))
        return out

    monkeypatch.setattr(torch.Tensor, "__torch_function__", classmethod(lambda cls, *a, **k: spy(*a, **k)))
    layer(torch.randn(1, 3, 64), 0).sum().backward()
    assert not seen, f"materialised large tensors: {seen}"


def test_lora_per_task_and_shared():
    torch.manual_seed(0)
    base = nn.Linear(10, 30)
    per_task = LoRALinear(base, 3, rank=2, out_blocks=_out_blocks(base, ("q", "v")))
    with torch.no_grad():
        per_task.B.normal_()
    x = torch.randn(3, 4, 10)
    idx = torch.tensor([0, 2, 1])
    out = per_task(x, idx)
    for i, t in enumerate(idx.tolist()):
        w = base.weight + per_task.delta_weight(t)
        torch.testing.assert_close(out[i], x[i] @ w.t() + base.bias, rtol=1e-5, atol=1e-5)
    assert torch.all(per_task.delta_weight(0)[10:20] == 0)
    shared = LoRALinear(nn.Linear(10, 30), 1, rank=2)
    with torch.no_grad():
        shared.B.normal_()
    torch.testing.assert_close(shared(x, 0), shared(x, 2))


def test_adapter_config_parsing_and_errors():
    assert parse_adapter_config({"type": "tora", "ranks": [8, 8, 2]}) == ToRAConfig(ranks=(8, 8, 2))
    assert parse_adapter_config({"type": "tora", "targets": ["v", "q"]}).targets == ("q", "v")
    with pytest.raises(ValueError, match="rank"):
        parse_adapter_config({"type": "tora", "ranks": [0, 8, 2]})
    with pytest.raises(ValueError, match="unknown target"):
        parse_adapter_config({"type": "lora", "targets": ["x"]})
    with pytest.raises(ValueError):
        parse_adapter_config({"type": "prefix"})
