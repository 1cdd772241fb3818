"""The end of a sweep as a new user meets it: the same command twice (``make demo``), ``--dry-run`` on
an existing sweep, and every command the sweep prints at its end, run as printed."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import INLINE_BASELINE, free_port, kill_group, run_search, search_env
from mlflow import MlflowClient

from mtsam.sweep.cli import main


def _printed(stdout: str, label: str) -> list[str]:
    line = next(ln for ln in stdout.splitlines() if ln.startswith(label))
    return shlex.split(line.removeprefix(label))


def _serve(argv: list[str], url: str, timeout: float = 120) -> tuple[subprocess.Popen, float, bytes]:
    """Start a printed server command; (process, seconds until ``url`` answered 200, the body)."""
    exe = Path(sys.executable).with_name(argv[0])  # the venv's console script, as on PATH there
    start = time.monotonic()
    proc = subprocess.Popen(
        [str(exe), *argv[1:]],
        env=search_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return proc, time.monotonic() - start, answer.read()
        except OSError:
            if proc.poll() is not None or time.monotonic() - start > timeout:
                kill_group(proc)
                raise AssertionError(f"{' '.join(argv)} did not answer {url} within {timeout}s") from None
            time.sleep(0.3)


def test_printed_mlflow_ui_command_answers(tiny_sweep):
    argv = _printed(tiny_sweep.stdout, "MLflow UI:")
    assert argv[:2] == ["mlflow", "ui"] and "--workers" in argv  # 1 worker: answers in seconds on 2 CPUs
    port = free_port()
    argv[argv.index("--port") + 1] = str(port)
    proc, seconds, _ = _serve(argv, f"http://127.0.0.1:{port}/health")
    try:
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=tiny"
        with urllib.request.urlopen(api, timeout=10) as answer:
            experiment = json.loads(answer.read())["experiment"]
        tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
        assert tags["mlflow.experimentKind"] == "custom_model_development"
    finally:
        kill_group(proc)
        proc.wait()
    print(f"mlflow ui answered after {seconds:.1f} s")


def test_printed_optuna_dashboard_command_opens_the_journal(tiny_sweep):
    argv = _printed(tiny_sweep.stdout, "Optuna study:")
    assert argv[0] == "optuna-dashboard" and argv[1].endswith("optuna.journal")
    port = free_port()
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    proc, _, body = _serve(argv, f"http://127.0.0.1:{port}/api/studies")
    try:
        studies = json.loads(body)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["tiny"]
    finally:
        kill_group(proc)
        proc.wait()


def test_printed_commands_use_absolute_store_paths(tiny_sweep):
    uri = _printed(tiny_sweep.stdout, "MLflow UI:")[3]
    assert uri.startswith("sqlite:////")
    analysis = _printed(tiny_sweep.stdout, "analysis:")
    assert analysis[analysis.index("--tracking-uri") + 1] == uri


def test_relative_sqlite_uri_means_the_same_file_everywhere(tmp_path, monkeypatch, capsys):
    """``sqlite:///runs/mlflow.db`` is relative to the working directory for tune/search.py, for the
    analysis CLI and for MLflow itself (SQLAlchemy's rule)."""
    from analysis.mlflow_source import check_tracking_uri
    from mtsam.sweep.config import load_sweep_config
    from mtsam.sweep.plan import make_plan

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    plan = make_plan(*load_sweep_config(None, ['tracking_uri="sqlite:///runs/mlflow.db"']))
    assert plan.tracking_uri == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    MlflowClient("sqlite:///runs/mlflow.db").search_experiments()  # MLflow creates it here
    assert (tmp_path / "runs" / "mlflow.db").is_file()
    check_tracking_uri("sqlite:///runs/mlflow.db")  # and the analysis finds the same file


@pytest.fixture(scope="module")
def demo_twice(tmp_path_factory):
    """The demo's command (no --name) run twice on one storage, 1 trial × 1 epoch."""
    storage = tmp_path_factory.mktemp("demo")
    args = [
        "--storage",
        storage,
        "--num-samples",
        1,
        "--epochs",
        1,
        "--set",
        f"base.baseline={json.dumps(INLINE_BASELINE)}",
    ]
    first, second = run_search(args), run_search(args)
    return storage, args, first, second


def test_the_demo_command_twice_starts_a_second_sweep(demo_twice):
    storage, _, first, second = demo_twice
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "already finished" in second.stdout and "starting 'quickstart-2'" in second.stdout
    assert (storage / "quickstart-2" / "best" / "adapter.pt").is_file()
    client = MlflowClient(f"sqlite:///{storage}/mlflow.db")
    assert {e.name for e in client.search_experiments()} >= {"quickstart", "quickstart-2"}


def test_dry_run_describes_an_existing_sweep(demo_twice, capsys):
    storage, args, _, _ = demo_twice
    assert main([*map(str, args), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "existing:   sweep 'quickstart' (finished)" in out and "1 complete" in out
    assert "starts a new sweep 'quickstart-3'" in out
    assert main([*map(str, args), "--name", "quickstart", "--dry-run"]) == 0
    assert "a run now:  refuses (finished" in capsys.readouterr().out
    assert main([*map(str, args), "--name", "quickstart"]) == 2  # named: an error, not a rename
    assert "already finished" in capsys.readouterr().err
    assert not (storage / "quickstart-3").exists()  # a dry run creates nothing
