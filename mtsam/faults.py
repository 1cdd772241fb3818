"""Deliberate faults for reliability tests (config section ``faults``; all off by default).

Each fault can be limited to the first process that claims its marker file (created atomically),
so in a sweep exactly one trial crashes / diverges / hits a full disk while the others run normally,
and a retried trial continues past a crash — the "resume from the last checkpoint" scenario.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import torch


class InjectedCrash(RuntimeError):
    pass


def claim(marker: str | None) -> bool:
    """True for the first caller only (per marker); always True without a marker."""
    if not marker:
        return True
    path = Path(marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


class FaultInjector:
    def __init__(self, faults) -> None:
        self.faults = faults
        self._nan_armed: bool | None = None

    def maybe_crash(self, epoch: int, step_in_epoch: int) -> None:
        f = self.faults
        if f is None or f.crash_at_epoch != epoch or step_in_epoch != 1:
            return
        if claim(f.crash_marker):
            raise InjectedCrash(f"injected crash at epoch {epoch}")

    def corrupt_loss(self, losses: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        f = self.faults
        if f is None or f.nan_at_epoch != epoch:
            return losses
        if self._nan_armed is None:  # decided once per run, so the whole epoch diverges consistently
            self._nan_armed = claim(f.nan_marker)
        return losses * float("nan") if self._nan_armed else losses

    def maybe_disk_full(self, epoch: int, path: Path) -> None:
        f = self.faults
        if f is not None and f.disk_full_at_epoch == epoch and claim(f.disk_full_marker):
            raise OSError(errno.ENOSPC, f"No space left on device (injected) writing {path}")
