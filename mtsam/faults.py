"""Deliberate faults for reliability tests (config section ``faults``; all off by default).

A crash is injected at most once per marker file, so a retried trial (Tune ``max_failures``)
continues past it — exactly the "crash mid-epoch, resume from the last checkpoint" scenario.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


class InjectedCrash(RuntimeError):
    pass


class FaultInjector:
    def __init__(self, faults) -> None:
        self.faults = faults

    def maybe_crash(self, epoch: int, step_in_epoch: int) -> None:
        f = self.faults
        if f is None or f.crash_at_epoch is None or epoch != f.crash_at_epoch or step_in_epoch != 1:
            return
        marker = Path(f.crash_marker) if f.crash_marker else None
        if marker is not None:
            if marker.exists():
                return
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(str(os.getpid()))
        raise InjectedCrash(f"injected crash at epoch {epoch}")

    def corrupt_loss(self, losses: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        f = self.faults
        if f is not None and f.nan_at_epoch == epoch:
            return losses * float("nan")
        return losses
