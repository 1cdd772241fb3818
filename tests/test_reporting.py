"""Reports that run ahead of the driver: order, stops, errors, and where they wait (ASHA's rungs)."""

import threading
import time

import pytest

from mtsam.sweep.config import load_sweep_config
from mtsam.sweep.plan import make_plan
from mtsam.sweep.reporting import BackgroundReporter
from mtsam.sweep.tuning import build_scheduler, decision_epochs


class Driver:
    """Stands in for Tune's side of ``tune.report``: each call blocks until ``answer`` (continue or
    stop, as Tune's own report does: a stop raises SystemExit(0) in the reporting thread)."""

    def __init__(self):
        self.received: list[int] = []
        self._answers: list[str] = []
        self._cv = threading.Condition()

    def report(self, metrics, checkpoint):
        assert checkpoint.path  # a real tune.Checkpoint of the snapshot folder
        with self._cv:
            self.received.append(metrics["epoch"])
            self._cv.notify_all()
            self._cv.wait_for(lambda: len(self._answers) >= len(self.received), timeout=10)
            answer = self._answers[len(self.received) - 1]
        if answer == "stop":
            raise SystemExit(0)
        if answer == "error":
            raise OSError("storage unreachable")

    def answer(self, what: str) -> None:
        with self._cv:
            self._answers.append(what)
            self._cv.notify_all()

    def wait_received(self, n: int) -> None:
        with self._cv:
            assert self._cv.wait_for(lambda: len(self.received) >= n, timeout=10)


def _snapshot(tmp_path, epoch):
    folder = tmp_path / f"ckpt-{epoch}"
    folder.mkdir()
    (folder / "checkpoint.pt").write_text("x")
    return folder


def test_runs_ahead_keeps_order_and_removes_snapshots(tmp_path):
    driver = Driver()
    reporter = BackgroundReporter(report=driver.report)
    reporter.submit({"epoch": 1}, _snapshot(tmp_path, 1))  # returns before the driver answers
    driver.wait_received(1)
    answered = threading.Timer(0.2, driver.answer, ["continue"])
    answered.start()
    start = time.monotonic()
    reporter.submit({"epoch": 2}, _snapshot(tmp_path, 2))  # waits: one report in flight at most
    assert time.monotonic() - start >= 0.15
    driver.answer("continue")
    reporter.drain()
    assert driver.received == [1, 2]
    assert not list(tmp_path.glob("ckpt-*"))


def test_a_stop_reaches_the_training_thread_as_system_exit(tmp_path):
    driver = Driver()
    reporter = BackgroundReporter(report=driver.report)
    reporter.submit({"epoch": 1}, _snapshot(tmp_path, 1))
    reporter.check()  # nothing known yet: training goes on
    driver.answer("stop")
    with pytest.raises(SystemExit) as stopped:
        reporter.drain()
    assert stopped.value.code == 0
    with pytest.raises(SystemExit):  # and it stays known: every later check stops the trial too
        reporter.check()
    with pytest.raises(SystemExit):
        reporter.submit({"epoch": 2}, _snapshot(tmp_path, 2))
    assert driver.received == [1]


def test_reporting_errors_are_raised_in_the_training_thread(tmp_path):
    driver = Driver()
    reporter = BackgroundReporter(report=driver.report)
    reporter.submit({"epoch": 1}, _snapshot(tmp_path, 1))
    driver.answer("error")
    with pytest.raises(OSError, match="storage unreachable"):
        reporter.drain()


def test_prepare_writes_the_checkpoint_in_the_reporter_thread_before_the_report(tmp_path):
    """The trainable hands the epoch's checkpoint write to the reporter: it runs off the training
    thread, before Tune sees the folder; a failed write (disk full) reaches the training thread."""
    driver = Driver()
    seen = {}

    def report(metrics, checkpoint):
        seen["file"] = (tmp_path / "ckpt-1" / "checkpoint.pt").read_text()
        driver.report(metrics, checkpoint)

    def write():
        seen["thread"] = threading.current_thread().name
        (tmp_path / "ckpt-1" / "checkpoint.pt").write_text("epoch 1")

    reporter = BackgroundReporter(report=report)
    folder = tmp_path / "ckpt-1"
    folder.mkdir()
    reporter.submit({"epoch": 1}, folder, prepare=write)
    driver.answer("continue")
    reporter.drain()
    assert seen == {"thread": "tune-report", "file": "epoch 1"} and driver.received == [1]

    def disk_full():
        raise OSError(28, "No space left on device")

    reporter.submit({"epoch": 2}, _snapshot(tmp_path, 2), prepare=disk_full)
    with pytest.raises(OSError, match="No space left"):
        reporter.drain()
    assert driver.received == [1]  # nothing reported without its checkpoint
    assert not list(tmp_path.glob("ckpt-*"))


def test_waits_for_the_answer_where_the_scheduler_decides(tmp_path):
    driver = Driver()
    reporter = BackgroundReporter(sync_epochs={2}, report=driver.report)
    reporter.submit({"epoch": 1}, _snapshot(tmp_path, 1))
    driver.answer("continue")
    threading.Timer(0.2, driver.answer, ["stop"]).start()
    with pytest.raises(SystemExit):  # epoch 2 is a rung: the stop arrives before training goes on
        reporter.submit({"epoch": 2}, _snapshot(tmp_path, 2))
    assert driver.received == [1, 2]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], {1, 2, 4}),  # quickstart: 6 epochs, grace 1, rf 2
        (["base.train.epochs=20", "scheduler.grace_period=2", "scheduler.reduction_factor=3"], {2, 6, 18}),
        (["base.train.epochs=10", "scheduler.reduction_factor=1.5"], {1, 2, 3, 4, 6, 8}),
        (["scheduler.type=fifo"], set()),
    ],
)
def test_decision_epochs_are_ashas_rungs(overrides, expected):
    plan = make_plan(*load_sweep_config(None, overrides))
    assert decision_epochs(plan) == expected
    scheduler = build_scheduler(plan)
    if expected:  # Ray's own rungs (private, so checked here): a decision at the first epoch ≥ each
        epochs = plan.base["train"]["epochs"]
        rungs = {min(e for e in range(1, epochs + 1) if e >= m) for m, _ in scheduler._brackets[0]._rungs}
        assert decision_epochs(plan) == rungs - {epochs}
