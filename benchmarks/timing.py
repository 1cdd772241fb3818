"""Side-by-side timing: variants interleaved across repeats, ratios taken per repeat.

The machine is shared, so absolute times drift with other people's load. Every repeat runs all
variants back to back (order alternating ABC, CBA, ... so drift hits each variant equally) and a
ratio is computed per repeat from neighbouring measurements; the reported figure is the median of
those per-repeat ratios with their min–max.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    variants: dict[str, Callable[[], object]],
    repeats: int,
    device: torch.device,
    warmup: int = 1,
    inner: int = 1,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Seconds per call of each variant, one entry per repeat (mean over ``inner`` calls).

    Returns (wall-clock seconds, this process's CPU seconds). The wall clock is the measure; CPU
    time is a cross-check on a shared CPU machine (it does not count time lost to other processes).
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            synchronize(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(inner):
                variants[name]()
            synchronize(device)
            wall[name].append((time.perf_counter() - start) / inner)
            cpu[name].append((time.process_time() - start_cpu) / inner)
    return wall, cpu


def summary(values: list[float], digits: int = 4) -> dict:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "n": len(values),
    }


def ratio(times: dict[str, list[float]], num: str, den: str) -> list[float]:
    """Per-repeat ratio num / den (the two were measured next to each other)."""
    return [a / b for a, b in zip(times[num], times[den])]


def figure(
    ratios: list[float], target: float, higher_is_better: bool, cpu_ratios: list[float] | None = None, **extra
) -> dict:
    """One headline figure: median of per-repeat wall-clock ratios, min–max, target, whether it is
    met; on CPU also the same ratio in process CPU time (``cpu_time``), the load-independent check."""
    s = summary(ratios, 3)
    met = s["median"] >= target if higher_is_better else s["median"] <= target
    out = {
        "value": s["median"],
        "min": s["min"],
        "max": s["max"],
        "repeats": s["n"],
        "target": f"{'>=' if higher_is_better else '<='} {target}",
        "met": met,
    }
    if cpu_ratios is not None:
        c = summary(cpu_ratios, 3)
        out["cpu_time"] = {"value": c["median"], "min": c["min"], "max": c["max"]}
    return {**out, **extra}


def paired_figure(measured: tuple[dict, dict], num: str, den: str, target: float, higher: bool, **extra):
    """``figure`` of num / den from ``interleaved``'s (wall, cpu) times; CPU time only off CUDA."""
    wall, cpu = measured
    cpu_ratios = ratio(cpu, num, den) if cpu else None
    return figure(ratio(wall, num, den), target, higher, cpu_ratios, **extra)


def count_flops(fn) -> int:
    """FLOPs of ``fn()`` (matmuls, convolutions, attention; forward and any backward inside):
    ``mtsam.flops.count_flops``, which the Pareto cost ``train_flops`` uses too."""
    from mtsam.flops import count_flops as count

    return count(fn)
