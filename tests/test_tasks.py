"""Task registry, heads and losses."""

import pytest
import torch
import torch.nn.functional as F

from mtsam.errors import ConfigError
from mtsam.metrics import DepthMeter
from mtsam.tasks import TASK_BUILDERS, Task, apply_head, build_task, build_tasks, register_task

B, H, W = 2, 4, 5


def _pred(task: Task) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw B×C×H×W leaf, head output)."""
    raw = torch.randn(B, task.channels, H, W, requires_grad=True)
    return raw, apply_head(task.head, raw)


def _targets(num_classes: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "semantic": torch.randint(-1, num_classes + 2, (B, H, W), generator=g),  # incl. −1 and ≥ C
        "depth": torch.rand(B, 1, H, W, generator=g) * (torch.rand(B, 1, H, W, generator=g) > 0.3),
        "normal": F.normalize(torch.randn(B, 3, H, W, generator=g), dim=1)
        * (torch.rand(B, 1, H, W, generator=g) > 0.3),
    }


TASKS = build_tasks({"semantic": 4, "depth": None, "normal": None})


def test_builtin_tasks():
    assert [t.channels for t in TASKS.values()] == [4, 1, 3]
    assert [t.head for t in TASKS.values()] == ["log_softmax", "identity", "l2_normalize"]
    assert TASKS["semantic"].metrics == {"miou": True, "pix_acc": True}
    assert TASKS["depth"].metrics == {"abs_err": False, "rel_err": False}
    assert list(TASKS["normal"].metrics) == ["mean", "median", "within_11.25", "within_22.5", "within_30"]
    targets = _targets(4)
    for name, task in TASKS.items():  # each meter reports exactly the task's metrics
        meter = task.meter()
        meter.update(_pred(task)[1].detach(), targets[name])
        assert list(meter.compute()) == list(task.metrics)


def test_losses_match_reference_formulas():
    targets = _targets(4)
    raw, pred = _pred(TASKS["semantic"])
    t = targets["semantic"].clone()
    t[t >= 4] = -1
    expected = F.nll_loss(pred, t, ignore_index=-1)
    assert torch.allclose(TASKS["semantic"].loss(pred, targets["semantic"]), expected)
    raw, pred = _pred(TASKS["depth"])
    valid = targets["depth"] != 0
    expected = (pred - targets["depth"]).abs()[valid].mean()
    assert torch.allclose(TASKS["depth"].loss(pred, targets["depth"]), expected)
    raw, pred = _pred(TASKS["normal"])
    valid = (targets["normal"] != 0).any(1)
    expected = 1 - (pred * targets["normal"]).sum(1)[valid].mean()
    assert torch.allclose(TASKS["normal"].loss(pred, targets["normal"]), expected)


def test_losses_safe_without_valid_pixels():
    empty = {
        "semantic": torch.full((B, H, W), -1),
        "depth": torch.zeros(B, 1, H, W),
        "normal": torch.zeros(B, 3, H, W),
    }
    for name, task in TASKS.items():
        raw, pred = _pred(task)
        loss = task.loss(pred, empty[name])
        assert loss.item() == 0.0 and loss.grad_fn is not None, name
        loss.backward()
        assert torch.isfinite(raw.grad).all() and (raw.grad == 0).all(), name


def test_nan_predictions_outside_the_mask_do_not_leak():
    pred = torch.full((1, 1, 2, 2), float("nan"), requires_grad=True)
    target = torch.zeros(1, 1, 2, 2)
    loss = TASKS["depth"].loss(pred, target)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(pred.grad).all()


def test_registry_errors():
    with pytest.raises(ConfigError, match="known: depth, normal, semantic"):
        build_task("segmentation")
    with pytest.raises(ConfigError, match="channels"):
        build_task("semantic")
    with pytest.raises(ConfigError, match="3 channel"):
        build_task("normal", channels=2)
    with pytest.raises(ConfigError, match="already registered"):
        register_task("depth")(lambda channels=None: None)


def test_register_custom_task():
    @register_task("edges")
    def edges(channels=None):
        return Task("edges", channels or 1, "identity", F.l1_loss, {"abs_err": False}, DepthMeter)

    try:
        tasks = build_tasks({"depth": None, "edges": 2})
        assert list(tasks) == ["depth", "edges"] and tasks["edges"].channels == 2
        x = torch.rand(1, 2, 3, 3)
        assert tasks["edges"].loss(x, x).item() == 0.0
    finally:
        TASK_BUILDERS.pop("edges")
    with pytest.raises(ConfigError, match="unknown head"):
        Task("bad", 1, "softmax", F.l1_loss, {}, DepthMeter)
