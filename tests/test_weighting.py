"""Contract suite run over every registered weighting, plus each method's defining property."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from mtsam.errors import ConfigError
from mtsam.weighting import WEIGHTINGS, HParam, Weighting, build_weighting, list_weightings
from mtsam.weighting.mgda import min_norm_weights

TASKS = ["semantic", "depth", "normal"]
METHODS = list_weightings()


class TinyMTL(nn.Module):
    """Shared linear trunk + one linear head per task."""

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(8, 1) for _ in range(num_tasks))

    def losses(self, x: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x)
        return torch.stack([((head(h).squeeze(1) - y) ** 2).mean() for head, y in zip(self.heads, ys)])


def _setup(num_tasks: int, seed: int = 0):
    torch.manual_seed(seed)
    model = TinyMTL(num_tasks)
    x, ys = torch.randn(16, 4), torch.randn(num_tasks, 16)
    return model, x, ys


def _trainables(model: nn.Module, weighting: Weighting) -> list[nn.Parameter]:
    return [p for p in [*model.parameters(), *weighting.parameters()] if p.requires_grad]


def _zero(params) -> None:
    for p in params:
        p.grad = None


def _bad_value(spec: HParam, num_tasks: int):
    if spec.kind == "choice":
        return "no-such-choice"
    if spec.kind == "floats":
        return [-1.0] * num_tasks
    for bound, delta in ((spec.gt, -1.0), (spec.ge, -1.0), (spec.lt, 1.0), (spec.le, 1.0)):
        if bound is not None:
            return bound + delta
    raise AssertionError(f"{spec} has no validity bound to violate")


# ---------------------------------------------------------------- contract suite


@pytest.mark.parametrize("num_tasks", [1, 2, 3])
@pytest.mark.parametrize("name", METHODS)
def test_backward_contract(name: str, num_tasks: int) -> None:
    model, x, ys = _setup(num_tasks)
    w = build_weighting(name, TASKS[:num_tasks])
    shared = list(model.trunk.parameters())
    params = _trainables(model, w)

    weights = w.backward(model.losses(x, ys), shared)
    assert weights.shape == (num_tasks,) and weights.dtype == torch.float32
    assert not weights.requires_grad and torch.isfinite(weights).all()
    for p in params:
        assert p.grad is not None and torch.isfinite(p.grad).all()

    # Accumulation: an identical call (same state) on top of existing grads adds the same amount again.
    # w1/w2 hold separate copies of their own parameters, so only the model's grads are compared.
    w1, w2 = copy.deepcopy(w), copy.deepcopy(w)
    model_params = list(model.parameters())
    _zero(model_params)
    w1.backward(model.losses(x, ys), shared)
    first = [p.grad.clone() for p in model_params]
    w2.backward(model.losses(x, ys), shared)
    for p, g in zip(model_params, first):
        torch.testing.assert_close(p.grad, 2 * g, rtol=1e-5, atol=1e-6)

    w.after_step(model.losses(x, ys).detach())
    w.on_epoch_end(model.losses(x, ys).detach())


@pytest.mark.parametrize("name", METHODS)
def test_state_roundtrip_pickle_and_deepcopy(name: str) -> None:
    model, x, ys = _setup(3)
    w = build_weighting(name, TASKS)
    shared = list(model.trunk.parameters())
    opt = torch.optim.SGD(_trainables(model, w), lr=0.05)
    for epoch in range(3):  # enough epochs/steps for every method to leave its initial state
        for _ in range(2):
            opt.zero_grad()
            losses = model.losses(x, ys)
            w.backward(losses, shared)
            opt.step()
            w.after_step(losses.detach())
        w.on_epoch_end(model.losses(x, ys).detach() * (1.0 - 0.1 * epoch))

    restored = build_weighting(name, TASKS)
    restored.load_state_dict(w.state_dict())
    clones = [restored, pickle.loads(pickle.dumps(w)), copy.deepcopy(w)]
    expected = w.state_dict()
    for clone in clones:
        assert clone.state_dict().keys() == expected.keys()
        for key, value in clone.state_dict().items():
            torch.testing.assert_close(value, expected[key])

    # Same state -> same next weights (randomness and EMAs included).
    reference = w.backward(model.losses(x, ys), shared)
    for clone in clones:
        torch.testing.assert_close(clone.backward(model.losses(x, ys), shared), reference)


@pytest.mark.parametrize("name", METHODS)
def test_hparams_declared_validated_and_named_in_errors(name: str) -> None:
    cls = WEIGHTINGS[name]
    assert cls.name == name and isinstance(cls.uses_gradients, bool)
    build_weighting(name, TASKS)  # defaults validate
    for key, spec in cls.hparams.items():
        assert isinstance(spec, HParam)
        if spec.kind in ("float", "int"):
            assert spec.low <= spec.default <= spec.high
            build_weighting(name, TASKS, **{key: spec.low})  # the search range is legal
            build_weighting(name, TASKS, **{key: spec.high})
        with pytest.raises(ConfigError, match=f"weighting.{key}"):
            build_weighting(name, TASKS, **{key: _bad_value(spec, len(TASKS))})
    with pytest.raises(ConfigError, match="weighting.bogus"):
        build_weighting(name, TASKS, bogus=1.0)


def test_registry() -> None:
    expected = {
        "fixed",
        "ew",
        "uw",
        "dwa",
        "rlw",
        "gradnorm",
        "mgda",
        "pcgrad",
        "cagrad",
        "imtl",
        "db_mtl",
        "famo",
    }
    assert expected <= set(METHODS)
    assert {n for n in METHODS if WEIGHTINGS[n].uses_gradients} == {
        "gradnorm",
        "mgda",
        "pcgrad",
        "cagrad",
        "imtl",
        "db_mtl",
    }
    with pytest.raises(ConfigError, match="known: .*cagrad.*ew"):
        build_weighting("nope", TASKS)
    with pytest.raises(ConfigError, match="weighting.temperature: must be > 0, got -1"):
        build_weighting("dwa", TASKS, temperature=-1)
    with pytest.raises(ConfigError, match="one value per task"):
        build_weighting("fixed", TASKS, weights=[1, 1])
    with pytest.raises(ConfigError, match="all be zero"):
        build_weighting("fixed", TASKS, weights=[0, 0, 0])
    with pytest.raises(ConfigError, match="duplicate"):
        build_weighting("ew", ["a", "a"])


# ---------------------------------------------------------------- defining properties
# Linear losses L_t = g_t . theta + 5 make the per-task gradients on the shared theta exactly g_t.


def _linear_case(name: str, vectors: list[list[float]], **hparams):
    g = torch.tensor(vectors, dtype=torch.float32)
    theta = nn.Parameter(torch.zeros(g.shape[1]))
    w = build_weighting(name, TASKS[: len(vectors)], **hparams)
    weights = w.backward(g @ theta + 5.0, [theta])
    return g, theta.grad, weights


def test_pcgrad_removes_conflicting_components() -> None:
    g, update, weights = _linear_case("pcgrad", [[1.0, 0.0], [-1.0, 1.0]])
    torch.testing.assert_close(update, torch.tensor([0.5, 1.5]))  # (g1 + g2/2) + (g2 + g1)
    assert (g @ update >= -1e-6).all()
    torch.testing.assert_close(weights @ g, update)
    # Non-conflicting gradients are left alone.
    _, update, _ = _linear_case("pcgrad", [[1.0, 0.0], [1.0, 1.0]])
    torch.testing.assert_close(update, torch.tensor([2.0, 1.0]))


def test_mgda_two_tasks_is_min_norm_point() -> None:
    g, update, weights = _linear_case("mgda", [[1.0, 0.0], [0.0, 2.0]])
    g1, g2 = g
    a = ((g2 - g1) @ g2 / (g1 - g2).norm() ** 2).clamp(0, 1)
    torch.testing.assert_close(update, 2 * (a * g1 + (1 - a) * g2))
    torch.testing.assert_close(weights.sum(), torch.tensor(2.0))


def test_mgda_l2_normalisation_gives_min_norm_of_unit_gradients() -> None:
    g, update, weights = _linear_case(
        "mgda", [[4.0, 0.0, 1.0], [0.0, 0.1, 0.0], [-1.0, 1.0, 3.0]], normalization="l2"
    )
    u = g / g.norm(dim=1, keepdim=True)
    p = update / 3
    assert (u @ p >= p @ p - 1e-5).all()  # KKT of the min-norm point over the unit gradients
    torch.testing.assert_close(weights @ g, update)


def test_min_norm_frank_wolfe_satisfies_optimality() -> None:
    torch.manual_seed(1)
    v = torch.randn(4, 6, dtype=torch.float64)
    a = torch.from_numpy(min_norm_weights((v @ v.T).numpy()))
    p = a @ v
    assert (a >= -1e-12).all() and abs(a.sum() - 1) < 1e-9
    assert (v @ p >= p @ p - 1e-4).all()  # KKT: no vertex lies below the supporting hyperplane


def test_ew_and_fixed_weights() -> None:
    _, update, weights = _linear_case("ew", [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    torch.testing.assert_close(weights, torch.ones(3))
    torch.testing.assert_close(update, torch.tensor([2.0, 2.0]))
    _, _, weights = _linear_case("fixed", [[1.0], [1.0], [1.0]], weights=[1, 1, 4])
    torch.testing.assert_close(weights, torch.tensor([0.5, 0.5, 2.0]))


def test_dwa_follows_softmax_of_loss_ratios() -> None:
    w = build_weighting("dwa", TASKS, temperature=2.0)
    losses = torch.ones(3, requires_grad=True)
    torch.testing.assert_close(w.backward(losses * 1, []), torch.ones(3))
    w.on_epoch_end(torch.tensor([1.0, 2.0, 4.0]))
    torch.testing.assert_close(w.backward(losses * 1, []), torch.ones(3))
    w.on_epoch_end(torch.tensor([0.5, 2.0, 2.0]))
    expected = 3 * torch.softmax(torch.tensor([0.5, 1.0, 0.5]) / 2.0, dim=0)
    torch.testing.assert_close(w.backward(losses * 1, []), expected)


def test_uw_weight_is_exp_minus_log_variance() -> None:
    w = build_weighting("uw", TASKS[:2])
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor([0.5, -1.0]))
    losses = torch.tensor([2.0, 3.0], requires_grad=True)
    weights = w.backward(losses * 1, [])
    torch.testing.assert_close(weights, torch.exp(-torch.tensor([0.5, -1.0])))
    torch.testing.assert_close(losses.grad, weights)
    torch.testing.assert_close(w.log_vars.grad, 1 - weights * torch.tensor([2.0, 3.0]))


def test_imtl_equal_projections_on_unit_gradients() -> None:
    torch.manual_seed(2)
    vectors = (torch.randn(3, 5) * torch.tensor([[1.0], [10.0], [0.1]])).tolist()
    g, update, weights = _linear_case("imtl", vectors)
    proj = (g / g.norm(dim=1, keepdim=True)) @ update
    torch.testing.assert_close(proj, proj.mean().expand(3), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(weights.sum(), torch.tensor(3.0))


def test_cagrad_c0_is_average_gradient_and_c_bounds_hold() -> None:
    vectors = [[1.0, 0.0, 0.5], [-0.8, 1.0, 0.0], [0.1, -0.3, 2.0]]
    g, update, weights = _linear_case("cagrad", vectors, c=0.0)
    torch.testing.assert_close(update, 3 * g.mean(0))  # T x average (EW scale)
    torch.testing.assert_close(weights, torch.ones(3))
    c = 0.5
    g, update, _ = _linear_case("cagrad", vectors, c=c)
    d = update * (1 + c**2) / 3  # undo the rescale and the T convention
    g0 = g.mean(0)
    assert (d - g0).norm() <= c * g0.norm() + 1e-5
    assert (g @ d).min() >= (g @ g0).min() - 1e-5  # worst task improves at least as much as under g0


def test_gradnorm_moves_weight_towards_slower_task() -> None:
    theta = nn.Parameter(torch.zeros(2))
    g = torch.eye(2)
    w = build_weighting("gradnorm", TASKS[:2], alpha=1.5)
    w.backward(g @ theta + torch.tensor([1.0, 1.0]), [theta])  # records L(0)
    w.logits.grad = None
    w.backward(g @ theta + torch.tensor([0.9, 0.3]), [theta])  # task 0 trains slower
    with torch.no_grad():
        w.logits -= 0.1 * w.logits.grad
    weights = w.task_weights()
    assert weights[0] > 1.0 > weights[1]
    torch.testing.assert_close(weights.sum(), torch.tensor(2.0))


def test_rlw_sums_to_t_and_varies() -> None:
    w = build_weighting("rlw", TASKS, seed=0)
    draws = [w.backward(torch.ones(3, requires_grad=True) * 1, []) for _ in range(3)]
    for d in draws:
        torch.testing.assert_close(d.sum(), torch.tensor(3.0))
        assert (d > 0).all()
    assert not torch.allclose(draws[0], draws[1])
    again = build_weighting("rlw", TASKS, seed=0)
    torch.testing.assert_close(again.backward(torch.ones(3, requires_grad=True) * 1, []), draws[0])


def test_famo_upweights_task_that_improves_less() -> None:
    w = build_weighting("famo", TASKS[:2])
    assert list(w.parameters()) == []  # logits are updated internally, not by the trainer
    w.after_step(torch.tensor([1.0, 1.0]))
    w.after_step(torch.tensor([0.9, 0.5]))  # task 1 improved far more
    assert w.logits[0] > w.logits[1]
    weights = w.backward(torch.tensor([1.0, 1.0], requires_grad=True) * 1, [])
    assert weights[0] > weights[1]
    torch.testing.assert_close(weights.sum(), torch.tensor(2.0))


def test_db_mtl_rescales_log_gradients_to_largest() -> None:
    g, update, weights = _linear_case("db_mtl", [[3.0, 0.0], [0.0, 1.0]], beta=0.0)
    log_grads = g / 5.0  # d log(L) = g / L, L = 5
    torch.testing.assert_close(update, torch.tensor([0.6, 0.6]))
    torch.testing.assert_close(
        weights, log_grads.norm(dim=1).max() / log_grads.norm(dim=1), rtol=1e-5, atol=1e-6
    )


def test_gradient_methods_leave_heads_with_head_loss_only() -> None:
    # The head backward must not add the trunk's gradient a second time.
    model, x, ys = _setup(2)
    shared = list(model.trunk.parameters())
    reference = build_weighting("ew", TASKS[:2])
    reference.backward(model.losses(x, ys), shared)
    expected = [p.grad.clone() for p in model.parameters()]
    _zero(model.parameters())
    build_weighting("cagrad", TASKS[:2], c=0.0).backward(model.losses(x, ys), shared)
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-5, atol=1e-6)
