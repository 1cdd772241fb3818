"""Packed checkpoints: every tensor of a nested state survives the round trip through torch.save."""

import io

import torch

from mtsam.tensor_pack import pack, unpack


def _roundtrip(obj):
    buffer = io.BytesIO()
    torch.save(pack(obj), buffer)
    buffer.seek(0)
    return unpack(torch.load(buffer, weights_only=True))


def test_nested_state_round_trips_exactly():
    state = {
        "model": {"w": torch.randn(3, 4), "b": torch.randn(4)[::2]},  # a non-contiguous view
        "optimizer": {
            "state": {0: {"step": torch.tensor(7.0), "exp_avg": torch.randn(2, 1, 3)}},
            "param_groups": [{"params": [0], "betas": (0.9, 0.999), "lr": 1e-3}],
        },
        "rng": {"torch": torch.randint(0, 255, (16,), dtype=torch.uint8), "cuda": []},
        "counts": [torch.arange(5), torch.zeros(0, 3), 3, "text", None],
    }
    out = _roundtrip(state)
    assert out["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert isinstance(out["optimizer"]["param_groups"][0]["betas"], tuple)
    assert list(out["optimizer"]["state"]) == [0]  # int keys stay ints
    assert out["counts"][2:] == [3, "text", None]
    pairs = [
        (out["model"]["w"], state["model"]["w"]),
        (out["model"]["b"], state["model"]["b"]),
        (out["optimizer"]["state"][0]["step"], state["optimizer"]["state"][0]["step"]),
        (out["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"]),
        (out["rng"]["torch"], state["rng"]["torch"]),
        (out["counts"][0], state["counts"][0]),
        (out["counts"][1], state["counts"][1]),
    ]
    for got, want in pairs:
        assert got.dtype == want.dtype and got.shape == want.shape and torch.equal(got, want)
        assert got.is_contiguous()


def test_one_buffer_per_dtype_and_snapshot_semantics():
    weight = torch.ones(4, requires_grad=True)
    packed = pack({"a": weight, "b": torch.zeros(2, 2), "c": torch.arange(3)})
    assert set(packed["buffers"]) == {"float32", "int64"}
    assert packed["buffers"]["float32"].numel() == 8 and not packed["buffers"]["float32"].requires_grad
    with torch.no_grad():
        weight.add_(1)  # training goes on after the save: the packed copy must not change
    assert torch.equal(unpack(packed)["a"], torch.ones(4))
    restored = unpack(packed)
    restored["b"].add_(5)  # unpacked tensors are independent of the buffers and of each other
    assert torch.equal(unpack(packed)["b"], torch.zeros(2, 2))
