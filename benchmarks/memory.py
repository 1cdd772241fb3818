"""Peak memory of a training step, one fresh subprocess per design.

CUDA: ``torch.cuda.max_memory_allocated()`` during two steps minus what was allocated before the
first (model, batch) — activations, gradients, optimiser state and temporaries.

CPU: there is no allocator statistic, so the probe measures resident memory (RSS): after building
the model and batch it returns freed heap to the OS (``malloc_trim``), reads ``VmRSS``, resets the
kernel's high-water mark (``/proc/self/clear_refs`` ← 5), runs two steps and reports
``VmHWM − VmRSS_before``. A fresh process per design keeps one design's freed-but-cached heap from
hiding the other's peak. What it counts: the same as on CUDA plus allocator slack; the ratio between
designs is the figure to read.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import subprocess
import sys
from pathlib import Path

import torch

MIB = 2**20


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _trim_heap() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # glibc only
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_high_water_mark() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def probe(design: str, spec: dict, device: torch.device, precision: str = "auto", steps: int = 2) -> dict:
    """Peak memory growth (MiB) of ``steps`` training steps of one design, in this process."""
    from benchmarks.steps import build_setup, ours_step, reference_step

    adapter = {"type": "none"} if design == "none" else spec["adapter"]
    shape = (spec["variant"], spec["image_size"], adapter, spec["batch"], spec["hw"], device)
    # "ours_ckpt": our step with activation checkpointing (p7's measured ratio)
    checkpointing = design == "ours_ckpt" or spec.get("activation_checkpointing", False)
    setup = build_setup(*shape, precision=precision, activation_checkpointing=checkpointing)
    step = reference_step if design == "reference" else ours_step
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(steps):
            step(setup)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        return {"peak_mib": round(peak / MIB, 1), "method": "cuda max_memory_allocated"}
    _trim_heap()
    before = _status_kib("VmRSS")
    reset = _reset_high_water_mark()
    for _ in range(steps):
        step(setup)
    peak = _status_kib("VmHWM") - before
    method = "RSS high-water mark growth" + ("" if reset else " (HWM not resettable: upper bound)")
    return {"peak_mib": round(peak / 1024, 1), "method": method}


def estimate_vs_measured(spec: dict, device: torch.device, precision: str, peak_mib: dict) -> dict:
    """``mtsam.memory_plan``'s estimate of what one step adds over the loaded model (gradients,
    Adam state, activations, workspace) ÷ the measured growth, for ours with and without
    checkpointing. The target is ±20 % (0.8–1.2)."""
    from benchmarks.steps import TASKS
    from mtsam.device import uses_bf16
    from mtsam.memory_plan import estimate_memory

    bf16 = "bf16" if uses_bf16(device, precision) else "fp32"
    out: dict = {"precision": bf16, "target": "0.8-1.2"}
    for design, ckpt in (("ours", False), ("ours_ckpt", True)):
        args = (spec["variant"], TASKS, spec["adapter"], spec["image_size"], spec["batch"], tuple(spec["hw"]))
        est = estimate_memory(*args, bf16, activation_checkpointing=ckpt).training_state / MIB
        out[f"{design}_estimate_mib"] = round(est, 1)
        if peak_mib.get(design):
            out[f"{design}_estimate_over_measured"] = round(est / peak_mib[design], 3)
    ratios = [out[k] for k in ("ours_estimate_over_measured", "ours_ckpt_estimate_over_measured") if k in out]
    out["estimate_over_measured"] = ratios[0] if ratios else None
    out["met"] = bool(ratios) and all(0.8 <= r <= 1.2 for r in ratios)
    return out


def measure(
    designs: list[str],
    spec: dict,
    device: torch.device,
    threads: int,
    precision: str = "auto",
    timeout: float = 1800,
) -> dict:
    """Run ``probe`` for each design in its own ``benchmarks/run.py --probe-memory`` subprocess."""
    script = Path(__file__).with_name("run.py")
    out = {}
    for design in designs:
        cmd = [
            sys.executable, str(script), "--probe-memory", design,
            "--probe-spec", json.dumps(spec), "--device", device.type, "--threads", str(threads),
            "--precision", precision,
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            out[design] = {"peak_mib": None, "error": tail[0]}
            continue
        out[design] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out
