#!/usr/bin/env bash
# MTSAM-Tune sweep on a SLURM cluster: `sbatch cluster-slurm.sh [tune/search.py flags]`.
# Ray's documented SLURM pattern (docs.ray.io "Deploying on Slurm"): one Ray node per SLURM node,
# the head on the first node, workers on the others via srun; the MLflow server on the head bound
# to 127.0.0.1; then the sweep driver on the head with --address auto. See docs/CLUSTER.md.
#
# ---- settings you edit ------------------------------------------------------------------------
#SBATCH --job-name=mtsam-tune
#SBATCH --nodes=2                  # Ray nodes: the first is the head (it also runs trials)
#SBATCH --ntasks-per-node=1        # one Ray node per SLURM node; Ray packs the trials itself
#SBATCH --gpus-per-task=4          # GPUs per node (set 0 or remove on CPU-only partitions)
#SBATCH --cpus-per-task=32         # CPUs per node
#SBATCH --mem=0                    # all memory of the node
#SBATCH --time=24:00:00            # wall time; a sweep cut off here continues with --resume
#SBATCH --output=mtsam-tune-%j.log
##SBATCH --partition=gpu           # uncomment and set for your site
#
# Everything else is an environment variable with a default (export it or edit it here):
USER=${USER:-$(id -un)}
PROJECT=${MTSAM_PROJECT:-${SLURM_SUBMIT_DIR:-$PWD}}           # this checkout, on the shared filesystem
VENV=${MTSAM_VENV:-$PROJECT/.venv}                             # its venv (make install), on every node
CONFIG=${MTSAM_SWEEP_CONFIG:-tune/configs/nyuv2.yaml}
STORAGE=${MTSAM_STORAGE:-$PROJECT/runs}                        # trial checkpoints: shared filesystem
MLFLOW_DIR=${MTSAM_MLFLOW_DIR:-/tmp/$USER-mlflow-${SLURM_JOB_ID:-0}}  # sqlite store: head's LOCAL disk
MLFLOW_KEEP=${MTSAM_MLFLOW_KEEP:-$PROJECT/runs/mlflow}        # store copied in at start, back at the end
MLFLOW_PORT=${MTSAM_MLFLOW_PORT:-5000}
RAY_PORT=${MTSAM_RAY_PORT:-6379}
RAY_HEAD_ARGS=${MTSAM_RAY_HEAD_ARGS:-}                        # extra `ray start --head` flags (ports)
# -----------------------------------------------------------------------------------------------
set -euo pipefail
cd "$PROJECT"
export PATH=$VENV/bin:$PATH RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
# A per-job Ray temp dir: `ray.init()` of other jobs on a shared node never finds this cluster.
export RAY_TMPDIR=${RAY_TMPDIR:-/tmp/$USER-ray-${SLURM_JOB_ID:-0}}
mkdir -p "$RAY_TMPDIR"

nodes=$(scontrol show hostnames "$SLURM_JOB_NODELIST")
read -r -a node_list <<<"$nodes"
head_node=${node_list[0]}
head_ip=${MTSAM_HEAD_IP:-$(srun --nodes=1 --ntasks=1 -w "$head_node" hostname --ip-address | awk '{print $1}')}
# --address auto finds exactly this cluster (RAY_ADDRESS is what "auto" reads first).
export RAY_ADDRESS=$head_ip:$RAY_PORT
# Ray token authentication with a fresh token per job, passed to every srun step in the
# environment (readable by this user only): other users on a shared node cannot join or submit.
export RAY_AUTH_MODE=token
RAY_AUTH_TOKEN=${RAY_AUTH_TOKEN:-$(python -c "import secrets; print(secrets.token_hex(32))")}
export RAY_AUTH_TOKEN
cpus=${SLURM_CPUS_PER_TASK:-1}
gpus=${SLURM_GPUS_PER_TASK:-0}

cleanup() {
  bash "$PROJECT/tune/mlflow-server.sh" stop --dir "$MLFLOW_DIR" --port "$MLFLOW_PORT" || true
  if [ -f "$MLFLOW_DIR/mlflow.db" ]; then
    mkdir -p "$MLFLOW_KEEP" && cp -a "$MLFLOW_DIR/mlflow.db" "$MLFLOW_KEEP/mlflow.db.tmp" &&
      mv "$MLFLOW_KEEP/mlflow.db.tmp" "$MLFLOW_KEEP/mlflow.db" && echo "MLflow store saved to $MLFLOW_KEEP/mlflow.db"
  fi
  kill $(jobs -p) 2>/dev/null || true   # ending the srun steps of `ray start --block` ends their Ray nodes
  wait || true
}
trap cleanup EXIT

echo "head: $head_node ($head_ip:$RAY_PORT), workers: ${node_list[*]:1}"
# shellcheck disable=SC2086  # RAY_HEAD_ARGS is a list of flags
srun --nodes=1 --ntasks=1 -w "$head_node" \
  ray start --head --node-ip-address="$head_ip" --port="$RAY_PORT" --num-cpus="$cpus" --num-gpus="$gpus" --dashboard-host=127.0.0.1 $RAY_HEAD_ARGS --block &
deadline=$((SECONDS + 300))
until ray status --address "$RAY_ADDRESS" >/dev/null 2>&1; do
  [ "$SECONDS" -lt "$deadline" ] || { echo "Ray head did not come up within 300 s" >&2; exit 1; }
  sleep 2
done

for node in "${node_list[@]:1}"; do
  srun --nodes=1 --ntasks=1 -w "$node" \
    ray start --address="$RAY_ADDRESS" --num-cpus="$cpus" --num-gpus="$gpus" --block &
done

# This batch step runs on the head node: the server binds the head's 127.0.0.1 only (SSH-forward
# it to look: ssh -L 5000:127.0.0.1:5000 HEAD_NODE). Its sqlite store is on the head's local disk
# (sqlite on NFS invites locking trouble), brought in from and saved back to MLFLOW_KEEP, so a
# later job (--resume, the next sweep, the baselines) continues the same store.
mkdir -p "$MLFLOW_DIR"
if [ -f "$MLFLOW_KEEP/mlflow.db" ] && [ ! -f "$MLFLOW_DIR/mlflow.db" ]; then cp -a "$MLFLOW_KEEP/mlflow.db" "$MLFLOW_DIR/"; fi
bash tune/mlflow-server.sh start --dir "$MLFLOW_DIR" --port "$MLFLOW_PORT" --artifacts "$STORAGE/mlartifacts"

python tune/search.py --config "$CONFIG" --address auto --storage "$STORAGE" \
  --tracking-uri "http://127.0.0.1:$MLFLOW_PORT" "$@"
