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
    setup = build_setup(
        *shape, precision=precision, activation_checkpointing=spec.get("activation_checkpointing", False)
    )
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
