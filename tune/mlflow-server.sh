#!/usr/bin/env bash
# The MLflow tracking server of a cluster head: start | stop | status, idempotent.
#
#   tune/mlflow-server.sh start [--dir DIR] [--port PORT] [--artifacts URI] [--backend URI]
#   tune/mlflow-server.sh stop|status [--dir DIR] [--port PORT]
#
# Binds 127.0.0.1 only (reach it through an SSH port-forward). The pidfile, the log and, by default,
# the sqlite store live in DIR (default ~/mlflow): keep DIR on the head's local disk, not on NFS
# (sqlite's file locking is unreliable there; see docs/CLUSTER.md). "Running" means: the pidfile's
# process is alive and http://127.0.0.1:PORT/health answers; so a second `start` is a no-op and
# never a second server. (A `pgrep -f "mlflow server"` guard does not work: it matches the very
# `bash -c` the cluster launcher runs the guard in.)
set -euo pipefail

usage() { echo "usage: $0 start|stop|status [--dir DIR] [--port PORT] [--artifacts URI] [--backend URI]" >&2; exit 2; }
[ $# -ge 1 ] || usage
action=$1; shift
dir=${MTSAM_MLFLOW_DIR:-$HOME/mlflow}
port=${MTSAM_MLFLOW_PORT:-5000}
artifacts=""
backend=""
while [ $# -gt 0 ]; do
  case $1 in
    --dir) dir=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --artifacts) artifacts=$2; shift 2 ;;
    --backend) backend=$2; shift 2 ;;
    *) echo "mlflow-server.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
case $port in ''|*[!0-9]*) echo "mlflow-server.sh: --port must be a number, got '$port'" >&2; exit 2 ;; esac
dir=$(mkdir -p "$dir" && cd "$dir" && pwd)
artifacts=${artifacts:-$dir/artifacts}
backend=${backend:-sqlite:///$dir/mlflow.db}
pidfile=$dir/server.pid
log=$dir/server.log
timeout=${MTSAM_MLFLOW_TIMEOUT:-120}   # seconds to wait for /health (≈ 7 s idle, longer on a busy head)

# The mlflow next to this shell's python (the node venv is first on PATH), else ~/venv's.
mlflow_bin=${MTSAM_MLFLOW_BIN:-$(command -v mlflow || echo "$HOME/venv/bin/mlflow")}
python_bin=$(command -v python3 || command -v python)
if [ "$action" = start ] && [ ! -x "$mlflow_bin" ]; then
  echo "mlflow-server.sh: no mlflow executable at '$mlflow_bin' (set MTSAM_MLFLOW_BIN or put the venv on PATH)" >&2; exit 1
fi

healthy() {
  "$python_bin" - "$port" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=3) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
}

warm_up() {
  # /health answers before the workers have built their store: the first API call can take a
  # minute on a busy head, longer than a client's timeout (the sweep driver's is 10 s). Make a few
  # real calls now (spread over the workers), so "running" means "answers API calls".
  "$python_bin" - "$port" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/api/2.0/mlflow/experiments/search?max_results=1"
for _ in range(4):
    urllib.request.urlopen(url, timeout=300).read()
EOF
}

our_pid() {  # the pid in the pidfile, if that process is alive and is an mlflow server
  [ -f "$pidfile" ] || return 1
  local pid; pid=$(cat "$pidfile")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q mlflow "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

start() {
  exec 9>"$dir/server.lock"
  flock 9   # two concurrent starts: the second waits and then sees the first's server
  if pid=$(our_pid) && healthy; then
    echo "mlflow server already running (pid $pid) at http://127.0.0.1:$port"; return 0
  fi
  if ! our_pid >/dev/null && healthy; then
    echo "mlflow-server.sh: 127.0.0.1:$port already answers, but not with the server of $pidfile" >&2
    return 1
  fi
  if pid=$(our_pid); then  # alive but not answering: still starting, or hung
    wait_healthy "$pid" && return 0
    echo "mlflow-server.sh: pid $pid does not answer on port $port; run '$0 stop' first" >&2; return 1
  fi
  # uvicorn kills a worker that does not answer its health ping within 5 s (its default); on a
  # busy head a worker still importing MLflow misses it, and the server restarts workers forever.
  # setsid: its own process group (stop kills the workers too) and no tie to Ray's SSH session;
  # 9>&- so the server does not inherit the lock.
  setsid "$mlflow_bin" server --backend-store-uri "$backend" --artifacts-destination "$artifacts" \
    --host 127.0.0.1 --port "$port" --workers "${MTSAM_MLFLOW_WORKERS:-2}" \
    --uvicorn-opts "--timeout-worker-healthcheck ${MTSAM_MLFLOW_HEALTHCHECK_S:-120}" \
    >"$log" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$pid" >"$pidfile"
  wait_healthy "$pid" || { echo "mlflow-server.sh: server did not come up; last log lines:" >&2; tail -n 20 "$log" >&2; stop >/dev/null; return 1; }
}

wait_healthy() {
  local pid=$1 t=0
  while [ "$t" -lt "$timeout" ]; do
    kill -0 "$pid" 2>/dev/null || return 1
    if healthy; then
      warm_up || { echo "mlflow-server.sh: /health answers but API calls fail; see $log" >&2; return 1; }
      echo "mlflow server running (pid $pid) at http://127.0.0.1:$port, store $backend, log $log"; return 0
    fi
    sleep 1; t=$((t + 1))
  done
  return 1
}

stop() {
  local pid
  if ! pid=$(our_pid); then rm -f "$pidfile"; echo "mlflow server not running"; return 0; fi
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$pidfile"
  echo "mlflow server stopped (pid $pid)"
}

status() {
  local pid
  if pid=$(our_pid) && healthy; then echo "mlflow server running (pid $pid) at http://127.0.0.1:$port"; return 0; fi
  echo "mlflow server not running"; return 3
}

case $action in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) usage ;;
esac
