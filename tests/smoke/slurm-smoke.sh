#!/usr/bin/env bash
# `make slurm-smoke`: `sbatch cluster-slurm.sh` on a real one-node SLURM cluster on this machine.
#
# Debian's slurm-wlm + munge (installed if missing), slurmctld and slurmd on 127.0.0.1 with their
# own config, ports and spool dirs; cluster-slurm.sh with its #SBATCH settings edited the way a user
# would (one node, the CPUs this machine has, no GPUs) runs a 2-trial quickstart sweep; the job's
# log and its saved MLflow store are checked; everything this script started is stopped by PID.
# Root only. Ray runs on 127.0.0.1 with its own ports and temp dir (see cluster-smoke.sh).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
[ "$(id -u)" = 0 ] || { echo "slurm-smoke: run as root (it starts munged, slurmctld, slurmd)" >&2; exit 1; }
t0=$(date +%s)
stamp() { echo "[slurm-smoke +$(( $(date +%s) - t0 ))s] $*"; }
WORK=$(mktemp -d /tmp/mtsam-slurm-smoke.XXXXXX)
chmod 755 "$WORK"   # munged (user munge) creates its socket inside
PY=$REPO/.venv/bin/python
free_port() { "$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
pids=()

cleanup() {
  rc=$?
  set +e
  stamp "cleanup"
  if [ -n "${job:-}" ]; then  # let the job's own cleanup finish before its daemons go
    scancel "$job" 2>/dev/null
    for _ in $(seq 1 60); do [ -z "$(timeout 5 squeue -h -j "$job" 2>/dev/null)" ] && break; sleep 1; done
  fi
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[$i]}" 2>/dev/null; done
  for _ in $(seq 1 20); do alive=0; for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break; sleep 0.5; done
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null; done
  wait 2>/dev/null
  [ "$rc" = 0 ] && rm -rf "$WORK" || echo "slurm-smoke: FAILED (rc $rc), files kept in $WORK" >&2
  exit "$rc"
}
trap cleanup EXIT

stamp "packages"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null; }
fi

stamp "munged, slurmctld, slurmd on 127.0.0.1"
mkdir -p "$WORK"/{munge,state,spool,log}
chown munge: "$WORK/munge"
[ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create
MUNGE_SOCKET=$WORK/munge/munge.socket
runuser -u munge -- munged -F --socket="$MUNGE_SOCKET" --pid-file="$WORK/munge/munged.pid" \
  --log-file="$WORK/munge/munged.log" --seed-file="$WORK/munge/seed" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do [ -S "$MUNGE_SOCKET" ] && break; sleep 0.2; done
[ -S "$MUNGE_SOCKET" ] || { echo "munged did not start" >&2; exit 1; }

CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048 ))
cat >"$WORK/slurm.conf" <<EOF
ClusterName=mtsam-smoke
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=smoke Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$WORK/slurm.conf
slurmctld -D -f "$SLURM_CONF" >"$WORK/log/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -N localhost -f "$SLURM_CONF" >"$WORK/log/slurmd.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 60); do timeout 5 sinfo -h -o %t 2>/dev/null | grep -qE "^idle" && break; sleep 1; done
timeout 5 sinfo -h -o %t | grep -qE "^idle" || { echo "slurm node not idle:"; sinfo; tail -n 20 "$WORK"/log/*.log; exit 1; }

stamp "sbatch cluster-slurm.sh (2-trial sweep)"
# The settings a user edits at the top: one node, this machine's CPUs, no GPUs, 20 minutes.
sed -e "s/^#SBATCH --nodes=.*/#SBATCH --nodes=1/" -e "/^#SBATCH --gpus-per-task/d" \
  -e "s/^#SBATCH --cpus-per-task=.*/#SBATCH --cpus-per-task=$CPUS/" \
  -e "s/^#SBATCH --time=.*/#SBATCH --time=00:20:00/" \
  -e "s|^#SBATCH --output=.*|#SBATCH --output=$WORK/job-%j.log|" cluster-slurm.sh >"$WORK/cluster-slurm.sh"
ray_ports="--dashboard-port=$(free_port) --ray-client-server-port=$(free_port) --include-dashboard=false"
ray_ports+=" --dashboard-agent-listen-port=$(free_port) --dashboard-agent-grpc-port=$(free_port)"
ray_ports+=" --runtime-env-agent-port=$(free_port) --metrics-export-port=$(free_port)"
ray_ports+=" --node-manager-port=$(free_port) --object-manager-port=$(free_port)"
t_job=$(date +%s)
# Loopback only (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps 127.0.0.1 as the node address).
job=$(MTSAM_PROJECT=$REPO MTSAM_HEAD_IP=127.0.0.1 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 \
  MTSAM_RAY_PORT=$(free_port) MTSAM_MLFLOW_PORT=$(free_port) MTSAM_RAY_HEAD_ARGS="$ray_ports" \
  MTSAM_SWEEP_CONFIG=tune/configs/quickstart.yaml MTSAM_STORAGE=$WORK/runs MTSAM_MLFLOW_KEEP=$WORK/runs/mlflow \
  MTSAM_MLFLOW_DIR=$WORK/head-local/mlflow RAY_TMPDIR=$WORK/ray-tmp \
  sbatch --parsable --wait --chdir="$REPO" "$WORK/cluster-slurm.sh" --name slurm-smoke --num-samples 2 --epochs 1) ||
  { echo "job failed:"; tail -n 60 "$WORK"/job-*.log; exit 1; }
job_s=$(( $(date +%s) - t_job ))
log=$WORK/job-$job.log
stamp "job $job took ${job_s}s"

grep -q "^head: localhost (127.0.0.1:" "$log"
grep -q "mlflow server running" "$log"
grep -q "MLflow store saved to $WORK/runs/mlflow/mlflow.db" "$log"
"$PY" - "$WORK/runs/mlflow/mlflow.db" <<'EOF'
import sys
from mlflow.tracking import MlflowClient
client = MlflowClient(f"sqlite:///{sys.argv[1]}")
exp = client.get_experiment_by_name("slurm-smoke")
assert exp is not None, "no experiment slurm-smoke in the saved store"
trials = client.search_runs([exp.experiment_id], "tags.`mtsam.role` = 'trial'")
assert len(trials) == 2, f"{len(trials)} trial runs, expected 2"
assert all(r.info.status == "FINISHED" for r in trials), [r.info.status for r in trials]
print(f"saved MLflow store: 2 FINISHED trial runs in experiment slurm-smoke")
EOF
# the job left nothing behind: no Ray or MLflow of this job still running
left=$(pgrep -f -a "$WORK/(ray-tmp|head-local)" || true)
[ -z "$left" ] || { echo "still running after the job:" >&2; echo "$left" >&2; exit 1; }
stamp "OK: job ${job_s}s, total $(( $(date +%s) - t0 ))s"
