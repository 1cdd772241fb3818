#!/usr/bin/env bash
# `make cluster-smoke`: a real `ray up` of cluster-onprem.yaml on this machine, as a new user would.
#
# sshd (Debian's openssh-server) bound to 127.0.0.1 on a free port, a throwaway user and key, a
# local-provider YAML generated from cluster-onprem.yaml (head 127.0.0.1, no workers), `ray up -y`,
# a 2-trial sweep by `ray job submit` through `ray dashboard`'s port-forward against the head's
# MLflow server, `analysis.report` through an SSH port-forward, `make cluster-down`, and everything
# this script started stopped by PID. Root only (it adds a user). No traffic leaves 127.0.0.1:
# Ray runs with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (else `ray start` swaps 127.0.0.1 for the
# machine's address) and its own ports and temp dirs, so other Ray sessions here are untouched.
# The node's venv is kept in /var/cache/mtsam-cluster-smoke (torch is big): later runs are faster.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
[ "$(id -u)" = 0 ] || { echo "cluster-smoke: run as root (it creates a throwaway user and sshd)" >&2; exit 1; }
t0=$(date +%s)
stamp() { echo "[cluster-smoke +$(( $(date +%s) - t0 ))s] $*"; }

NODE_USER=${SMOKE_USER:-mtsam-smoke}
CACHE=${SMOKE_CACHE:-/var/cache/mtsam-cluster-smoke}
WORK=$(mktemp -d /tmp/mtsam-cluster-smoke.XXXXXX)
NODE_TMP=/tmp/mcs-$$   # the node's Ray temp dir: short, Ray's unix socket paths must stay < 108 bytes
chmod 755 "$WORK"
PY=$REPO/.venv/bin/python
free_port() { "$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
pids=()

cleanup() {
  rc=$?
  set +e
  stamp "cleanup"
  # sshd and the port-forwards (own process groups: setsid, so their ssh children go too)
  for pid in "${pids[@]}"; do kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null; done
  # what the throwaway user still runs (Ray, MLflow) was started by this script: end it by PID
  if id "$NODE_USER" >/dev/null 2>&1; then
    for pid in $(pgrep -u "$NODE_USER"); do kill "$pid" 2>/dev/null; done
    sleep 2
    for pid in $(pgrep -u "$NODE_USER"); do kill -9 "$pid" 2>/dev/null; done
    # its home stays in $CACHE for the venv (the rest is reset next run); userdel refuses while a
    # killed process is not reaped yet
    for _ in $(seq 1 20); do userdel "$NODE_USER" 2>/dev/null && break; sleep 0.5; done
  fi
  rm -rf "$NODE_TMP"
  [ "$rc" = 0 ] && rm -rf "$WORK" || echo "cluster-smoke: FAILED (rc $rc), files kept in $WORK" >&2
  exit "$rc"
}
trap cleanup EXIT

stamp "packages"
need=()
command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v nc >/dev/null || need+=(netcat-openbsd)
command -v rsync >/dev/null || need+=(rsync)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null; }
fi
"$REPO/.venv/bin/pip" install -q -e "$REPO[cluster,dev]"   # the laptop side: ray[default] for ray up / job submit

stamp "throwaway user $NODE_USER, key, sshd on 127.0.0.1"
id "$NODE_USER" >/dev/null 2>&1 && { echo "cluster-smoke: user $NODE_USER exists (an earlier run?); remove it first" >&2; trap - EXIT; exit 1; }
# The user's home lives in the cache so its ~/venv (torch is big) survives to the next run; the
# rest of the home starts fresh. (A symlinked ~/venv does not work: `python3 -m venv` refuses it.)
home=$CACHE/home
mkdir -p "$home"
find "$home" -mindepth 1 -maxdepth 1 ! -name venv -exec rm -rf {} +
useradd -M -d "$home" -s /bin/bash "$NODE_USER"
usermod -p '*' "$NODE_USER"   # no password, but not "locked" (sshd refuses locked accounts)
cp /etc/skel/.bashrc /etc/skel/.profile "$home/" 2>/dev/null || touch "$home/.bashrc"
mkdir -p "$WORK/ssh" "$WORK/shared/mtsam/data" "$WORK/shared/mtsam/checkpoints"
chown -R "$NODE_USER:" "$home" "$WORK/shared"
chmod 755 "$CACHE"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/id_ed25519"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/host_key"
install -d -m 700 -o "$NODE_USER" "$home/.ssh"
install -m 600 -o "$NODE_USER" "$WORK/ssh/id_ed25519.pub" "$home/.ssh/authorized_keys"
# The node's environment for Ray: loopback addresses, a private temp dir (no other ray.init()
# on this machine finds this cluster), no usage stats. Ray's launcher sources ~/.bashrc.
cat >>"$home/.bashrc" <<EOF
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_TMPDIR=$NODE_TMP RAY_USAGE_STATS_ENABLED=0
EOF
install -d -o "$NODE_USER" "$NODE_TMP"
SSH_PORT=$(free_port)
cat >"$WORK/ssh/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $SSH_PORT
HostKey $WORK/ssh/host_key
PidFile $WORK/ssh/sshd.pid
AllowUsers $NODE_USER
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
AllowTcpForwarding local
X11Forwarding no
MaxStartups 50:30:100
EOF
mkdir -p /run/sshd
setsid /usr/sbin/sshd -D -e -f "$WORK/ssh/sshd_config" 2>"$WORK/sshd.log" &
pids+=($!)
for _ in $(seq 1 50); do nc -z 127.0.0.1 "$SSH_PORT" 2>/dev/null && break; sleep 0.2; done

# The laptop: its own HOME (token, Ray's temp files) so root's real ~/.ray is never touched.
export HOME=$WORK/laptop RAY_AUTH_MODE=token RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export RAY_TMPDIR=$WORK/laptop/ray-tmp PATH=$REPO/.venv/bin:$PATH
mkdir -p "$RAY_TMPDIR"
ray get-auth-token --generate >/dev/null
chmod 600 "$HOME/.ray/auth_token"   # as docs/CLUSTER.md says

stamp "local-provider YAML from cluster-onprem.yaml"
GCS=$(free_port) DASH=$(free_port) MLFLOW=$(free_port) CLIENT=$(free_port)
AGENT=$(free_port) AGENT_GRPC=$(free_port) RUNTIME_ENV=$(free_port) METRICS=$(free_port)
NODE_MGR=$(free_port) OBJ_MGR=$(free_port)
YAML=$WORK/cluster-smoke.yaml
"$PY" - "$YAML" <<EOF
import re, sys, yaml
cfg = yaml.safe_load(open("cluster-onprem.yaml"))
cfg["cluster_name"] = "mtsam-smoke-$$"
cfg["provider"] = {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
cfg["min_workers"] = cfg["max_workers"] = 0
cfg["auth"] = {"ssh_user": "$NODE_USER", "ssh_private_key": "$WORK/ssh/id_ed25519",
               # Ray's auth section has no port; ProxyCommand reaches sshd's port on 127.0.0.1
               "ssh_proxy_command": "nc 127.0.0.1 $SSH_PORT"}
def local(cmd):
    cmd = cmd.replace("/mnt/shared", "$WORK/shared").replace("--port 5000", "--port $MLFLOW")
    if "ray start --head" in cmd:
        cmd = cmd.replace("--port=6379", "--port=$GCS") + (
            " --node-ip-address=127.0.0.1 --dashboard-port=$DASH --ray-client-server-port=$CLIENT"
            " --dashboard-agent-listen-port=$AGENT --dashboard-agent-grpc-port=$AGENT_GRPC"
            " --runtime-env-agent-port=$RUNTIME_ENV --metrics-export-port=$METRICS"
            " --node-manager-port=$NODE_MGR --object-manager-port=$OBJ_MGR")
    return cmd
for key in ("setup_commands", "head_setup_commands", "head_start_ray_commands"):
    cfg[key] = [local(c) for c in cfg[key]]
yaml.safe_dump(cfg, open(sys.argv[1], "w"), sort_keys=False)
EOF

stamp "ray up -y"
t_up=$(date +%s)
ray up -y --no-config-cache "$YAML" >"$WORK/ray-up.log" 2>&1 || { tail -n 60 "$WORK/ray-up.log"; exit 1; }
up_s=$(( $(date +%s) - t_up ))
stamp "ray up took ${up_s}s"
grep -q "mlflow server running" "$WORK/ray-up.log" || { echo "MLflow server not reported by ray up" >&2; exit 1; }
# the .bashrc line once, the token private, mtsam/data shipped
ssh_node() { ssh -i "$WORK/ssh/id_ed25519" -o ProxyCommand="nc 127.0.0.1 $SSH_PORT" -o StrictHostKeyChecking=no \
  -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "$NODE_USER@127.0.0.1" "$@"; }
[ "$(ssh_node "grep -c 'venv/bin:' ~/.bashrc")" = 1 ]
[ "$(ssh_node "stat -c %a ~/.ray/auth_token")" = 600 ]
ssh_node "test -f ~/mtsam-tune/mtsam/data/__init__.py && ~/venv/bin/python -c 'import mtsam.data'"

stamp "2-trial sweep by ray job submit (dashboard port-forward)"
JOB_PORT=$(free_port)
# `ray dashboard` keeps its forward while its SSH session has a terminal to read; give it a stdin
# that stays open (in a terminal you just leave it running).
setsid bash -c "sleep 100000 | ray dashboard -p $JOB_PORT --remote-port $DASH $YAML" >"$WORK/dashboard-forward.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 60); do nc -z 127.0.0.1 "$JOB_PORT" 2>/dev/null && break; sleep 1; done
t_job=$(date +%s)
# MLFLOW_HTTP_REQUEST_TIMEOUT: the driver's default 10 s is too short on a 2-core machine at load 40
ray job submit --address "http://127.0.0.1:$JOB_PORT" -- bash -c \
  "cd ~/mtsam-tune && MLFLOW_HTTP_REQUEST_TIMEOUT=60 ~/venv/bin/python tune/search.py --address auto --name smoke --num-samples 2 \
   --epochs 1 --max-concurrent 2 --tracking-uri http://127.0.0.1:$MLFLOW" >"$WORK/job.log" 2>&1 ||
  { tail -n 60 "$WORK/job.log"; exit 1; }
job_s=$(( $(date +%s) - t_job ))
stamp "sweep job took ${job_s}s"
grep -qi "succeeded" "$WORK/job.log"

stamp "analysis.report through an SSH port-forward of the head's MLflow"
ML_LOCAL=$(free_port)
setsid ssh -N -i "$WORK/ssh/id_ed25519" -o ProxyCommand="nc 127.0.0.1 $SSH_PORT" -o StrictHostKeyChecking=no \
  -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ExitOnForwardFailure=yes \
  -L "127.0.0.1:$ML_LOCAL:127.0.0.1:$MLFLOW" "$NODE_USER@127.0.0.1" &
pids+=($!)
for _ in $(seq 1 30); do nc -z 127.0.0.1 "$ML_LOCAL" 2>/dev/null && break; sleep 1; done
"$PY" -m analysis.report --tracking-uri "http://127.0.0.1:$ML_LOCAL" --experiment smoke --out "$WORK/report" \
  >"$WORK/report.log" 2>&1 || { tail -n 30 "$WORK/report.log"; exit 1; }
test -s "$WORK/report/report.html"
trials=$("$PY" -c "import csv,sys; print(len(list(csv.DictReader(open(sys.argv[1])))))" "$WORK/report/trials.csv")
[ "$trials" = 2 ] || { echo "report has $trials trials, expected 2" >&2; exit 1; }

stamp "make cluster-down (MLflow server stop + ray down -y)"
t_down=$(date +%s)
make -s cluster-down CLUSTER="$YAML" >"$WORK/ray-down.log" 2>&1 || { tail -n 40 "$WORK/ray-down.log"; exit 1; }
down_s=$(( $(date +%s) - t_down ))
# the port-forwards first: `ray dashboard` keeps a `while true; do sleep 86400; done` on the node
for pid in "${pids[@]:1}"; do kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null; done
sleep 2
left=$(pgrep -u "$NODE_USER" -a | grep -v -E "sshd|bash$" || true)
[ -z "$left" ] || { echo "still running after cluster-down:" >&2; echo "$left" >&2; exit 1; }
stamp "OK: ray up ${up_s}s, sweep job ${job_s}s, cluster-down ${down_s}s, total $(( $(date +%s) - t0 ))s"
