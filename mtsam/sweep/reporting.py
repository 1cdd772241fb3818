"""Report a trial's epochs to Tune from a side thread, so training does not wait for the driver.

A function trainable's ``tune.report`` blocks until the driver has handled the result (callbacks,
searcher, scheduler, checkpoint registration) and asked for the next one: 40–90 ms per epoch on a
busy 2-core machine, during which the trial's CPU or GPU does nothing. ``BackgroundReporter``
runs each report in its own thread and lets the next epoch start at once. One report is in flight
at most (``submit`` first waits for the previous one), so results keep their order and the driver
is never more than one epoch behind.

Where the scheduler may stop the trial (ASHA's rungs: ``sync_epochs``) the report is waited for,
as Tune's own is: running ahead there would only delay the stop until the next step ends. When
Tune stops the trial anyway (another scheduler, Ctrl-C, a reused actor being reset), the waiting
``tune.report`` raises ``SystemExit(0)`` in the reporter thread; the training thread sees it at its
next ``check()`` (the trainer calls it every step and evaluation batch) and leaves the same way,
well within the 2 s Tune gives a reused actor to wind down. An error inside ``tune.report`` is
re-raised in the training thread.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Collection
from pathlib import Path

from ray import tune


class BackgroundReporter:
    def __init__(self, sync_epochs: Collection[int] = (), report: Callable[..., None] = tune.report) -> None:
        self.sync_epochs = frozenset(sync_epochs)
        self._report = report
        self._thread: threading.Thread | None = None
        self.stopped = False  # Tune asked this trial to stop
        self.error: BaseException | None = None

    def submit(self, metrics: dict, checkpoint_dir: Path, prepare: Callable[[], None] | None = None) -> None:
        """Report ``metrics`` with the checkpoint in ``checkpoint_dir`` (removed once persisted);
        ``prepare`` runs first in the same thread (it writes the checkpoint's files)."""
        self.drain()
        self._thread = threading.Thread(
            target=self._run, args=(metrics, checkpoint_dir, prepare), name="tune-report", daemon=True
        )
        self._thread.start()
        if metrics.get("epoch") in self.sync_epochs:
            self.drain()

    def _run(self, metrics: dict, checkpoint_dir: Path, prepare: Callable[[], None] | None) -> None:
        try:
            if prepare is not None:
                prepare()
            self._report(metrics, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))
        except SystemExit:
            self.stopped = True
        except BaseException as exc:  # noqa: BLE001 - handed to the training thread
            self.error = exc
        finally:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)

    def check(self) -> None:
        """Raise in the training thread what the reporter learned: a stop, or a reporting error."""
        if self.stopped:
            raise SystemExit(0)  # what Tune's own report raises: the trial ends without an error
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def drain(self) -> None:
        """Wait for the report in flight, then raise what it brought back (a stop or an error)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.check()
