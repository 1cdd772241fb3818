"""Shared fixtures: ``tiny_sweep`` runs one real small sweep (Ray + Optuna + MLflow) per session.

Other test modules (sweep, analysis) read its MLflow store and Ray experiment directory instead of
running their own sweeps. Helpers run ``tune/search.py`` as a subprocess in its own session, so a
test can SIGKILL the driver and clean up every process it started by process group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SEARCH = REPO / "tune" / "search.py"
TINY_SAMPLES, TINY_EPOCHS = 4, 2
# An explicit single-task baseline for sweeps that should not spend time training their own.
INLINE_BASELINE = {
    split: {
        "semantic": {"miou": 0.04, "pix_acc": 0.47},
        "depth": {"abs_err": 1.3, "rel_err": 0.25},
        "normal": {
            "mean": 69.0,
            "median": 55.0,
            "within_11.25": 0.002,
            "within_22.5": 0.009,
            "within_30": 0.02,
        },
    }
    for split in ("val", "test")
}


def search_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


@contextlib.contextmanager
def ray_cluster(**head_args) -> Iterator:
    """A real multi-node Ray (``ray.cluster_utils.Cluster``) for this test; shut down afterwards,
    with this process's RAY_ADDRESS (which Cluster sets) put back as it was."""
    from ray.cluster_utils import Cluster

    old_address = os.environ.get("RAY_ADDRESS")
    cluster = Cluster(initialize_head=True, head_node_args={"include_dashboard": False, **head_args})
    try:
        yield cluster
    finally:
        cluster.shutdown()
        if old_address is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = old_address


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of ``proc`` (started with start_new_session: only our processes)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def start_search(args: list, log: Path | None = None, env: dict | None = None) -> subprocess.Popen:
    out = open(log, "w") if log else subprocess.PIPE  # noqa: SIM115 - closed by the caller's wait
    return subprocess.Popen(
        [sys.executable, str(SEARCH), *map(str, args)],
        cwd=REPO,
        stdout=out,
        stderr=subprocess.STDOUT if log else subprocess.PIPE,
        text=True,
        env=env or search_env(),
        start_new_session=True,
    )


def run_search(args: list, timeout: float = 480, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = start_search(args, env=env)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        stdout, stderr = proc.communicate()
        tail = f"{stdout[-3000:]}\n{stderr[-3000:]}"
        raise AssertionError(f"tune/search.py timed out after {timeout}s:\n{tail}") from None
    finally:
        kill_group(proc)  # stray Ray daemons of a driver that died
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(folder: Path, port: int | None = None) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 (a free port unless given) for the block; yields its URI."""
    exe = Path(sys.executable).with_name("mlflow")  # the venv's console script
    port = port or free_port()
    args = f"{exe} server --backend-store-uri sqlite:///{folder}/server.db --artifacts-destination "
    args += f"{folder / 'artifacts'} --host 127.0.0.1 --port {port} --workers 1"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    proc = subprocess.Popen(args.split(), env=search_env(), start_new_session=True, **quiet)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        yield uri
    finally:
        kill_group(proc)
        proc.wait()


@dataclass(frozen=True)
class TinySweep:
    """A finished sweep: ``storage``/``experiment`` is its Ray directory, ``tracking_uri`` its store."""

    storage: Path
    tracking_uri: str
    experiment: str
    num_samples: int
    epochs: int
    stdout: str
    stderr: str

    @property
    def exp_path(self) -> Path:
        return self.storage / self.experiment


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory) -> TinySweep:
    """4 trials × 2 epochs of the quickstart (tiny MTSAM, 2 concurrent, ASHA), baselines included."""
    storage = tmp_path_factory.mktemp("tiny_sweep")
    proc = run_search(
        f"--storage {storage} --name tiny --num-samples {TINY_SAMPLES} --epochs {TINY_EPOCHS}".split()
    )
    assert proc.returncode == 0, f"tiny sweep failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return TinySweep(
        storage=storage,
        tracking_uri=f"sqlite:///{storage.resolve()}/mlflow.db",
        experiment="tiny",
        num_samples=TINY_SAMPLES,
        epochs=TINY_EPOCHS,
        stdout=proc.stdout,
        stderr=proc.stderr,
    )
