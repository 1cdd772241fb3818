"""The cluster launcher configs (cluster.yaml, cluster-onprem.yaml) and the head's MLflow server.

Fast checks of what `ray up` does with them, on real parts: Ray's own config preparation and
schema validation, real `rsync` with the configs' exclude list, and the configs' MLflow and setup
commands run in `bash --login` the way the launcher runs them. `make cluster-smoke` does the rest
for real (sshd on 127.0.0.1, `ray up`, a sweep, `ray down`).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import psutil
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ["cluster.yaml", "cluster-onprem.yaml"]
MLFLOW_SH = REPO / "tune" / "mlflow-server.sh"


def load(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_start_command(config: dict) -> str:
    (cmd,) = [c for c in config["head_start_ray_commands"] if "mlflow-server.sh start" in c]
    return cmd


def as_launcher_runs(cmd: str, home: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """`cmd` in a login shell, as Ray's SSH command runner wraps it (bash --login -c -i '...')."""
    env = {**os.environ, "HOME": str(home), **(env_extra or {})}
    wrapped = f"true && source ~/.bashrc 2>/dev/null; ({cmd})"
    return subprocess.run(
        ["bash", "--login", "-c", "-i", wrapped],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


# --- Ray's own config preparation and validation (what `ray up` does before any SSH) ---------------


@pytest.mark.parametrize("name", CONFIGS)
def test_config_passes_ray_preparation_and_validation(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load(name)
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    if config["provider"]["type"] == "local":
        # The whole `ray up` bootstrap for the local provider (AWS's would call the AWS API).
        from ray.autoscaler._private.commands import _bootstrap_config

        prepared = _bootstrap_config(copy.deepcopy(config), no_config_cache=True)
    # What the launcher will run on the head: Ray's dashboard and MLflow on loopback only.
    head = " ".join(prepared["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "mlflow-server.sh start" in head
    assert prepared["rsync_exclude"] == config["rsync_exclude"]


def test_ray_validation_rejects_what_ray_up_would_reject():
    """The check above is real: an unknown field or a wrong type fails Ray's schema."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    for broken in ({"head_stop_commands": ["x"]}, {"rsync_exclude": "runs"}):
        config = {**load("cluster-onprem.yaml"), **broken}
        with pytest.raises(jsonschema.ValidationError):
            validate_config(prepare_config(config))


def test_head_of_the_aws_config_takes_no_trials():
    config = load("cluster.yaml")
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}


# --- file mounts: what rsync actually ships -------------------------------------------------------


def rsync_list(source: Path, excludes: list[str], tmp_path: Path) -> set[str]:
    """Files `rsync -avz --exclude ... SRC/ DEST/` would copy, as Ray's run_rsync_up calls it."""
    if shutil.which("rsync") is None:
        pytest.fail("rsync is not installed (the cluster launcher needs it; .ci/run installs it)")
    args = [a for e in excludes for a in ("--exclude", e)]
    dest = tmp_path / "dest"
    dest.mkdir(exist_ok=True)
    out = subprocess.run(
        ["rsync", "-avz", "--dry-run", "--out-format=SHIP %n", *args, f"{source}/", f"{dest}/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = [line[5:] for line in out.splitlines() if line.startswith("SHIP ")]
    return {n for n in names if not n.endswith("/")}


def test_both_configs_exclude_the_same_paths():
    assert load("cluster.yaml")["rsync_exclude"] == load("cluster-onprem.yaml")["rsync_exclude"]


def test_file_mounts_ship_every_tracked_file_of_the_project(tmp_path):
    config = load("cluster-onprem.yaml")
    assert config["file_mounts"]["~/mtsam-tune"] == "."
    tracked = subprocess.run(
        ["git", "ls-files", "mtsam", "analysis", "tune", "pyproject.toml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert any(p.startswith("mtsam/data/") for p in tracked)
    shipped = rsync_list(REPO, config["rsync_exclude"], tmp_path)
    missing = sorted(set(tracked) - shipped)
    assert not missing, f"not shipped to the nodes: {missing[:10]}"
    assert not [p for p in shipped if p.startswith((".venv/", ".git/", "runs/")) or "__pycache__" in p]


def test_excludes_are_anchored_to_the_project_root(tmp_path):
    src = tmp_path / "src"
    files = [
        "runs/mlflow.db",
        "data/nyuv2/train/image/0.npy",
        "checkpoints/sam.pth",
        ".venv/bin/python",
        ".git",
        "mtsam/__pycache__/x.pyc",
        "mtsam/data/scenes.py",
        "mtsam/runs/keep.py",
        "tune/checkpoints/keep.txt",
    ]
    for f in files:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        (src / f).write_text("x")
    shipped = rsync_list(src, load("cluster.yaml")["rsync_exclude"], tmp_path)
    assert shipped == {"mtsam/data/scenes.py", "mtsam/runs/keep.py", "tune/checkpoints/keep.txt"}


# --- setup commands: idempotent, token private ----------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
def test_setup_commands_can_run_twice(name, tmp_path):
    """The .bashrc line is appended once; the token ends up mode 600 even if rsync brought it 644."""
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    token = home / ".ray" / "auth_token"
    token.write_text("secret")
    token.chmod(0o644)
    commands = [c for c in load(name)["setup_commands"] if "bashrc" in c or "auth_token" in c]
    assert len(commands) == 2
    for _ in range(2):
        for cmd in commands:
            result = as_launcher_runs(cmd, home)
            assert result.returncode == 0, result.stderr
    lines = (home / ".bashrc").read_text().splitlines()
    assert len([line for line in lines if "venv/bin" in line]) == 1
    assert token.stat().st_mode & 0o777 == 0o600
    assert (home / ".ray").stat().st_mode & 0o777 == 0o700


# --- the head's MLflow server, started the way the configs start it --------------------------------


def mlflow_servers(port: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "server" in cmd and any(c.endswith("mlflow") for c in cmd) and str(port) in cmd:
            found.append(proc)
    return found


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_mlflow_start_twice_leaves_one_server_then_stops(tmp_path):
    """Both configs' start commands, the first one twice: one server, loopback only; stop ends it.
    (One server for both configs: their commands differ only in the artifact destination.)"""
    port = free_port()
    store = tmp_path / "mlflow"

    def local(cmd: str) -> str:
        cmd = cmd.replace("~/mtsam-tune/", f"{REPO}/").replace("--dir ~/mlflow", f"--dir {store}")
        cmd = re.sub(r"--port \d+", f"--port {port}", cmd)
        return re.sub(r"--artifacts \S+", f"--artifacts {tmp_path / 'artifacts'}", cmd)

    aws, onprem = (local(mlflow_start_command(load(name))) for name in CONFIGS)
    env = {
        "MTSAM_MLFLOW_BIN": str(Path(shutil.which("mlflow") or REPO / ".venv/bin/mlflow")),
        "MTSAM_MLFLOW_WORKERS": "1",  # a faster start on a busy CI machine; the count is not under test
    }
    try:
        first = as_launcher_runs(aws, tmp_path, env)
        assert first.returncode == 0, first.stdout + first.stderr
        pid = int((store / "server.pid").read_text())
        for again in (aws, onprem):
            result = as_launcher_runs(again, tmp_path, env)
            assert result.returncode == 0, result.stdout + result.stderr
            assert "already running" in result.stdout
        assert [p.pid for p in mlflow_servers(port)] == [pid]
        # loopback only: every listening socket on the port is bound to 127.0.0.1
        conns = [c for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port]
        assert conns and all(c.laddr.ip == "127.0.0.1" for c in conns if c.status == "LISTEN")
        assert (store / "mlflow.db").exists()
    finally:
        stop = subprocess.run(
            ["bash", str(MLFLOW_SH), "stop", "--dir", str(store), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert stop.returncode == 0, stop.stderr
    assert not mlflow_servers(port) and not listening(port)
    assert not (store / "server.pid").exists()
    status = subprocess.run(["bash", str(MLFLOW_SH), "status", "--dir", str(store), "--port", str(port)])
    assert status.returncode == 3


def test_mlflow_script_rejects_bad_arguments(tmp_path):
    result = subprocess.run(
        ["bash", str(MLFLOW_SH), "start", "--dir", str(tmp_path), "--port", "50x0"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "--port must be a number" in result.stderr
    assert not (tmp_path / "server.pid").exists()


# --- SLURM ----------------------------------------------------------------------------------------

SLURM = REPO / "cluster-slurm.sh"


def test_slurm_script_parses_and_has_its_settings_on_top():
    subprocess.run(["bash", "-n", str(SLURM)], check=True)
    text = SLURM.read_text()
    sbatch = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    for option in ("--nodes=", "--gpus-per-task=", "--cpus-per-task=", "--time="):
        assert any(option in line for line in sbatch), option
    # sbatch reads #SBATCH lines only before the first command
    first_command = next(i for i, line in enumerate(text.splitlines()) if line and not line.startswith("#"))
    assert all(text.splitlines().index(line) < first_command for line in sbatch)


def test_slurm_ray_start_commands_are_the_documented_ones():
    script = [line.strip() for line in SLURM.read_text().splitlines() if line.strip().startswith("ray start")]
    docs = (REPO / "docs" / "CLUSTER.md").read_text()
    assert len(script) == 2 and any("--head" in c for c in script)
    for command in script:
        assert command in docs, f"docs/CLUSTER.md does not show: {command}"
    assert all("--block" in c for c in script)  # srun steps live as long as their Ray node
    assert "--dashboard-host=127.0.0.1" in script[0]
    assert "tune/mlflow-server.sh start" in SLURM.read_text()
    assert re.search(r"python tune/search\.py .*--address auto", SLURM.read_text())
