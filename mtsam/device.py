"""Where a model runs and in which precision: one rule for the trainer, predictions and benchmarks.

``precision``: ``auto`` is bf16 autocast on CUDA and float32 on CPU; ``bf16`` is bf16 autocast on
either device (on CPU it runs the same mixed-precision code path a GPU run takes, which is how the
tests cover it); ``fp32`` turns autocast off (e.g. to rule precision out when debugging a GPU run).
bf16 keeps float32's exponent range, so no loss scaling is needed (see ``mtsam.weighting``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch

from .errors import MTSAMError

PRECISIONS = ("auto", "fp32", "bf16")


def pick_device(name: str, field: str = "train.device") -> torch.device:
    """``auto`` → CUDA when visible, else CPU; ``cuda`` without a visible GPU is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise MTSAMError(f"{field}: cuda requested but no CUDA device is visible")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def uses_bf16(device: torch.device, precision: str) -> bool:
    if precision not in PRECISIONS:
        raise MTSAMError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast_for(device: torch.device, precision: str = "auto") -> Callable[[], AbstractContextManager]:
    """A factory of fresh autocast contexts (one per forward) for ``device`` and ``precision``."""
    if uses_bf16(device, precision):
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext


def cap_gpu_memory_to(share: float, device: torch.device) -> None:
    """Let this process allocate at most ``share`` of the GPU's memory: beyond it torch raises
    OutOfMemoryError here, instead of a neighbour sharing the card running out (fractional GPUs)."""
    torch.cuda.set_per_process_memory_fraction(share, device)


def precision_name(device: torch.device, precision: str) -> str:
    return "bf16 autocast" if uses_bf16(device, precision) else "float32"
