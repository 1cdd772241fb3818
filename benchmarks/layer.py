"""p1: one adapted qkv layer, forward + backward, against the frozen layer and the reference design.

The layer is built by the product's own injection (``inject_adapters`` with the default q/k/v
targets), so it is exactly the module the encoder runs. The input is task-major stacked
(T, side, side, d) with task index [0, 1, ..., T-1], requires grad as inside a network, and the
backward pass gets a fixed non-uniform output gradient (random, per-channel scaled).
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.reference import MaterialisedToRA
from benchmarks.timing import count_flops, interleaved, paired_figure, ratio, summary
from mtsam.adapters import TaskRouting, ToRAConfig, inject_adapters
from mtsam.device import autocast_for


def qkv_layers(dim: int, tasks: int, ranks, dropout: float, device: torch.device, seed: int = 0):
    """(frozen nn.Linear d → 3d, the ToRALinear wrapping it, its reference-design wrapper)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        base = nn.Linear(dim, 3 * dim)
        block = nn.Module()
        block.attn = nn.Module()
        block.attn.qkv = base
        encoder = nn.Module()
        encoder.blocks = nn.ModuleList([block])
        config = ToRAConfig(ranks=tuple(ranks), dropout=dropout)
        (tora,) = inject_adapters(encoder, config, tasks, TaskRouting())
        with torch.no_grad():  # a trained-looking core (G = 0 at init would not change the cost)
            tora.G.normal_(0, 0.05)
    base.to(device)
    tora.to(device).train()
    return base, tora, MaterialisedToRA(tora)


def layer_inputs(dim: int, tasks: int, side: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tasks, side, side, dim, generator=g).to(device).requires_grad_(True)
    scale = torch.rand(3 * dim, generator=g) * 2 + 0.05  # q, k, v channels get unequal gradients
    grad = (torch.randn(tasks, side, side, 3 * dim, generator=g) * scale).to(device)
    return x, grad, torch.arange(tasks, device=device)


def _runner(layer, x, grad, index, device, precision: str = "auto"):
    autocast = autocast_for(device, precision)
    params = [p for p in layer.parameters() if p.requires_grad]
    cast = {}

    def run():
        x.grad = None
        for p in params:
            p.grad = None
        with autocast():
            y = layer(x) if isinstance(layer, nn.Linear) else layer(x, index)
        g = cast.get(y.dtype)
        if g is None:
            g = cast[y.dtype] = grad.to(y.dtype)
        y.backward(g)

    return run


def bench_p1(args, device: torch.device) -> dict:
    """p1 figures for each configured layer shape; the first shape gives the headline figures."""
    out = {}
    for shape in args.layer_shapes:
        dim, side, tasks, ranks = shape["dim"], shape["side"], shape["tasks"], shape["ranks"]
        x, grad, index = layer_inputs(dim, tasks, side, device)
        runs = {}
        for dropout in (0.0, 0.1):
            base, tora, reference = qkv_layers(dim, tasks, ranks, dropout, device)
            tag = "" if dropout == 0 else "_dropout"
            runs[f"tora{tag}"] = _runner(tora, x, grad, index, device, args.precision)
            if dropout == 0:
                runs["frozen"] = _runner(base, x, grad, index, device, args.precision)
                runs["materialised"] = _runner(reference, x, grad, index, device, args.precision)
        flops = {name: count_flops(run) for name, run in runs.items()}
        times, cpu = interleaved(runs, args.repeats, device, warmup=1)
        label = f"d={dim}->{3 * dim} T={tasks} R={'/'.join(map(str, ranks))} tokens/task={side * side}"
        measured = (times, cpu if device.type == "cpu" else {})
        out[label] = {
            "shape": label,
            "tora_over_frozen": paired_figure(measured, "tora", "frozen", 1.15, False, shape=label),
            "materialised_over_factored": paired_figure(
                measured, "materialised", "tora", 2.0, True, shape=label
            ),
            "tora_dropout_over_frozen": summary(ratio(times, "tora_dropout", "frozen"), 3),
            "flop_ratio_tora_over_frozen": round(flops["tora"] / flops["frozen"], 4),
            "flop_ratio_materialised_over_factored": round(flops["materialised"] / flops["tora"], 4),
            "seconds": {name: summary(v) for name, v in times.items()},
            "gflop": {name: round(f / 1e9, 3) for name, f in flops.items()},
        }
    return out
