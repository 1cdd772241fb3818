"""One driver per sweep: an advisory lock on ``driver.lock`` in the sweep's state directory.

Two drivers on one sweep (a second ``--resume`` while the first still runs) would both open MLflow
runs for the same trials and both write Tune's experiment state. The lock is ``flock``-based, so
the kernel releases it when its driver dies, even by SIGKILL; what the file says (pid, host, start)
is only for the error message. Holding it also proves that no other driver can be appending to the
Optuna journal, so a journal lock file left by a driver killed mid-append is removed at once
instead of stalling the resumed sweep for Optuna's 30 s grace period.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import socket
from pathlib import Path

from mtsam.errors import ConfigError

DRIVER_LOCK = "driver.lock"
JOURNAL_LOCK_SUFFIX = ".lock"  # what Optuna's JournalFileOpenLock appends to the journal's path


class DriverLock:
    def __init__(self, state_dir: Path, name: str) -> None:
        self.path = Path(state_dir) / DRIVER_LOCK
        self.name = name
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock (no-op if held); ConfigError naming the other driver if it is taken."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"sweep '{self.name}' is being run by another driver ({holder}; {self.path}); "
                "wait for it to end or stop it, then --resume"
            ) from None
        started = datetime.datetime.now().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def clear_stale_journal_lock(self, journal: Path) -> bool:
        """Remove the Optuna journal's lock file; only safe (and only done) while this lock is held."""
        if self._fd is None:
            return False
        stale = journal.with_name(journal.name + JOURNAL_LOCK_SUFFIX)
        try:
            stale.unlink()
        except FileNotFoundError:
            return False
        return True

    def __enter__(self) -> DriverLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
