#!/usr/bin/env bash
# A Ray cluster on this machine: one head and N worker nodes, token auth on, everything on
# 127.0.0.1. It is the way to try the cluster path without a cloud, and what the tests use.
#
#   cluster/local.sh up [N]     start a head and N worker nodes (default 1)
#   cluster/local.sh status     print what runs (nodes, PIDs, addresses, Prometheus)
#   cluster/local.sh down       stop what `up` started, and nothing else
#
# Then, in the same shell:
#   source "$(cluster/local.sh env)"          # RAY_ADDRESS, RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH
#   oodstudy submit search_spaces/quickstart.yaml --address "$RAY_ADDRESS" --wait
#
# Settings (environment):
#   OODSTUDY_CLUSTER_DIR      state dir: token, PIDs, logs, each node's Ray temp dir
#                             (default /tmp/oodstudy-cluster-$UID; keep it short: Ray puts
#                             unix sockets under it and their paths may not exceed 107 bytes)
#   OODSTUDY_HEAD_CPUS        CPUs the head offers to trials (default 1)
#   OODSTUDY_WORKER_CPUS      CPUs each worker node offers (default 1)
#   OODSTUDY_GCS_PORT         head's GCS port (default 6390)
#   OODSTUDY_DASHBOARD_PORT   dashboard and Jobs API (default 8270)
#   OODSTUDY_METRICS_PORT     Prometheus metrics of the head; worker i uses +i (default 8090)
#   OODSTUDY_PORT_BASE        first of a block of 10 ports per node for the node's own
#                             agents and managers (default 42000)
#   OODSTUDY_METRICS_INTERVAL_MS  how often every process reports its metrics (default 5000)
#   OODSTUDY_PROMETHEUS_PORT  Prometheus on 127.0.0.1 (default 9090); the head's dashboard
#                             finds it there (RAY_PROMETHEUS_HOST)
#   RAY, PYTHON, PROMETHEUS   the commands used (default ray, python, prometheus)
#
# When a `prometheus` command is found (Debian: apt-get install prometheus), `up` also starts
# Prometheus on 127.0.0.1:$OODSTUDY_PROMETHEUS_PORT, its data in <state dir>/prometheus: it
# scrapes every node through the head's service-discovery file, once per metrics interval.
# If it cannot start (the port is taken), the cluster runs without it and `up` says why.
#
# Why every node gets its own --temp-dir: `ray start` writes the cluster's address to
# <temp-dir>/ray_current_cluster, and a plain `ray.init()` reads /tmp/ray/ray_current_cluster.
# With our own temp dir nobody's plain `ray.init()` attaches to this cluster by accident
# (`ray.init(address="auto")` still finds any GCS process it can see with `ps`; pass an
# explicit address). `ray stop` kills every Ray process of the user on the machine, so `down`
# does not use it: it stops the process groups `up` started, then any process left that
# carries this cluster's marker variable (OODSTUDY_LOCAL_CLUSTER=<state dir>, inherited by
# every Ray process, worker and job driver of the cluster).
set -euo pipefail

STATE=${OODSTUDY_CLUSTER_DIR:-/tmp/oodstudy-cluster-$(id -u)}
HEAD_CPUS=${OODSTUDY_HEAD_CPUS:-1}
WORKER_CPUS=${OODSTUDY_WORKER_CPUS:-1}
GCS_PORT=${OODSTUDY_GCS_PORT:-6390}
DASHBOARD_PORT=${OODSTUDY_DASHBOARD_PORT:-8270}
METRICS_PORT=${OODSTUDY_METRICS_PORT:-8090}
PORT_BASE=${OODSTUDY_PORT_BASE:-42000}
OBJECT_STORE_BYTES=${OODSTUDY_OBJECT_STORE_BYTES:-200000000}
PROMETHEUS_PORT=${OODSTUDY_PROMETHEUS_PORT:-9090}
RAY=${RAY:-ray}
PYTHON=${PYTHON:-python}
PROMETHEUS=${PROMETHEUS:-prometheus}

die() { echo "local.sh: $*" >&2; exit 2; }

# PIDs of live processes whose environment holds this cluster's marker (Linux /proc).
marked_pids() {
  local marker="OODSTUDY_LOCAL_CLUSTER=$STATE" env pid
  for env in /proc/[0-9]*/environ; do
    pid=${env#/proc/}; pid=${pid%/environ}
    [[ $pid == "$$" ]] && continue
    if { tr "\0" "\n" < "$env"; } 2>/dev/null | grep -qxF "$marker"; then echo "$pid"; fi
  done
}

# ray start flags of node number $1 (0 = head): its own temp dir, metrics port and port block.
node_flags() {
  local i=$1 base=$((PORT_BASE + 10 * $1))
  echo --node-ip-address=127.0.0.1 --temp-dir="$STATE/node$i" \
    --metrics-export-port=$((METRICS_PORT + i)) \
    --node-manager-port=$base --object-manager-port=$((base + 1)) \
    --dashboard-agent-listen-port=$((base + 2)) --dashboard-agent-grpc-port=$((base + 3)) \
    --runtime-env-agent-port=$((base + 4)) \
    --min-worker-port=$((base + 100 * (i + 1) + 1000)) --max-worker-port=$((base + 100 * (i + 1) + 1099)) \
    --object-store-memory="$OBJECT_STORE_BYTES" --disable-usage-stats --block
}

# Start one node in its own session (so `down` can stop its process group); $1 = node number.
start_node() {
  local i=$1; shift
  local head_env=()  # the head's dashboard asks Prometheus (its Metrics page, /api/prometheus_health)
  if ((i == 0)); then head_env=(RAY_PROMETHEUS_HOST="http://127.0.0.1:$PROMETHEUS_PORT"); fi
  mkdir -p "$STATE/node$i"
  # shellcheck disable=SC2046
  env -u RAY_AUTH_TOKEN -u RAY_ADDRESS OODSTUDY_LOCAL_CLUSTER="$STATE" "${head_env[@]}" \
    RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$STATE/auth_token" RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0 RAY_metrics_report_interval_ms="${OODSTUDY_METRICS_INTERVAL_MS:-5000}" \
    setsid "$RAY" start $(node_flags "$i") "$@" > "$STATE/node$i.log" 2>&1 < /dev/null &
  echo $! > "$STATE/node$i.pid"
}

# Wait until the dashboard lists $1 alive nodes.
wait_for_nodes() {
  "$PYTHON" - "$1" "http://127.0.0.1:$DASHBOARD_PORT" "$STATE/auth_token" <<'EOF'
import json, sys, time, urllib.request
want, url, token_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
token = open(token_file).read().strip()
deadline, alive = time.time() + 120, -1
while time.time() < deadline:
    try:
        request = urllib.request.Request(url + "/nodes?view=summary", headers={"Authorization": "Bearer " + token})
        summary = json.load(urllib.request.urlopen(request, timeout=5))["data"]["summary"]
        alive = sum(node["raylet"]["state"] == "ALIVE" for node in summary)
        if alive >= want:
            sys.exit(0)
    except Exception:
        pass
    time.sleep(1)
sys.exit(f"local.sh: only {max(alive, 0)} of {want} nodes came up within 120 s; see the node*.log files")
EOF
}

# Prometheus on 127.0.0.1:$PROMETHEUS_PORT, in its own session and marked like the nodes (so
# `down` stops it), scraping the targets the head writes to its service-discovery file (every
# node's metrics port, the dashboard's and the autoscaler's). It is an extra: when it cannot
# start, one line on stderr says why and the cluster keeps running.
prometheus_failed() {
  echo "$1" > "$STATE/prometheus.failed"
  echo "local.sh: $1" >&2
}

start_prometheus() {
  local session interval_ms pid reason
  session=$(readlink -f "$STATE/node0/session_latest")
  interval_ms=${OODSTUDY_METRICS_INTERVAL_MS:-5000}
  ((interval_ms >= 1000)) || interval_ms=1000
  cat > "$STATE/prometheus.yml" <<PROMETHEUS_YML
# written by cluster/local.sh up: the targets are those of the head's service-discovery file
global:
  scrape_interval: ${interval_ms}ms
  evaluation_interval: ${interval_ms}ms
scrape_configs:
  - job_name: ray
    file_sd_configs:
      - files: ['$session/prom_metrics_service_discovery.json']
        refresh_interval: 5s
PROMETHEUS_YML
  if ! "$PYTHON" -c 'import socket, sys; socket.create_server(("127.0.0.1", int(sys.argv[1])))' "$PROMETHEUS_PORT" 2>/dev/null; then
    prometheus_failed "Prometheus not started: 127.0.0.1:$PROMETHEUS_PORT is in use (Debian's own prometheus service? 'systemctl stop prometheus'); the cluster runs without it; to get it, run 'down', then 'up' with OODSTUDY_PROMETHEUS_PORT set to a free port"
    return 0
  fi
  env -u RAY_AUTH_TOKEN -u RAY_ADDRESS OODSTUDY_LOCAL_CLUSTER="$STATE" \
    setsid "$PROMETHEUS" --config.file="$STATE/prometheus.yml" --storage.tsdb.path="$STATE/prometheus" \
    --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" > "$STATE/prometheus.log" 2>&1 < /dev/null &
  pid=$!
  echo "$pid" > "$STATE/prometheus.pid"
  # ready: /-/ready answers 200 (the TSDB is open, the config loaded) while our process lives
  for _ in $(seq 60); do
    kill -0 "$pid" 2>/dev/null || break
    if "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
      "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" 2>/dev/null && kill -0 "$pid" 2>/dev/null; then
      echo "http://127.0.0.1:$PROMETHEUS_PORT" > "$STATE/prometheus.url"
      return 0
    fi
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    reason="not ready within 30 s"
  else
    reason=$(grep -o 'err=.*' "$STATE/prometheus.log" | tail -n 1 || true)
    reason=${reason:-it exited}
  fi
  prometheus_failed "Prometheus did not start on 127.0.0.1:$PROMETHEUS_PORT ($reason; log: $STATE/prometheus.log); the cluster runs without it; fix that, then run 'down' and 'up' again"
  rm -f "$STATE/prometheus.pid"
}

cmd_up() {
  local workers=${1:-1}
  [[ $workers =~ ^[0-9]+$ ]] || die "up takes the number of worker nodes (a whole number), got '$workers'"
  if [[ -n $(marked_pids) ]]; then
    die "a cluster from $STATE is already running; run '$0 down' first (or set OODSTUDY_CLUSTER_DIR)"
  fi
  rm -rf "$STATE"
  mkdir -p "$STATE"
  chmod 700 "$STATE"
  (umask 077; "$PYTHON" -c "import secrets; print(secrets.token_hex(32))" > "$STATE/auth_token")

  start_node 0 --head --port="$GCS_PORT" --num-cpus="$HEAD_CPUS" \
    --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" --include-dashboard=true \
    --ray-client-server-port=$((PORT_BASE + 9))
  # workers join once the head's GCS is up (the head writes its address file then)
  for _ in $(seq 120); do
    [[ -s $STATE/node0/ray_current_cluster ]] && break
    kill -0 "$(cat "$STATE/node0.pid")" 2>/dev/null || { cat "$STATE/node0.log" >&2; cmd_down >/dev/null; die "the head did not start (log above)"; }
    sleep 0.5
  done
  local i
  for i in $(seq 1 "$workers"); do
    start_node "$i" --address="127.0.0.1:$GCS_PORT" --num-cpus="$WORKER_CPUS"
  done
  if ! wait_for_nodes $((workers + 1)); then
    cmd_down >/dev/null
    die "the cluster did not come up; it was stopped again"
  fi
  cat > "$STATE/env" <<EOF
export RAY_ADDRESS=http://127.0.0.1:$DASHBOARD_PORT
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=$STATE/auth_token
EOF
  echo "$workers" > "$STATE/workers"
  if command -v "$PROMETHEUS" > /dev/null; then start_prometheus; fi
  cmd_status
}

cmd_status() {
  if [[ ! -d $STATE || -z $(marked_pids) ]]; then
    echo "no local cluster running from $STATE"
    return 0
  fi
  local workers i pid
  workers=$(cat "$STATE/workers" 2>/dev/null || echo "?")
  echo "local Ray cluster from $STATE: head + $workers worker node(s), token auth on"
  for pid_file in "$STATE"/node*.pid; do
    i=$(basename "$pid_file" .pid); i=${i#node}; pid=$(cat "$pid_file")
    if kill -0 "$pid" 2>/dev/null; then state=running; else state=stopped; fi
    echo "  node$i: $state (pid $pid, metrics http://127.0.0.1:$((METRICS_PORT + i))/metrics, temp dir $STATE/node$i)"
  done
  echo "  dashboard and Jobs API: http://127.0.0.1:$DASHBOARD_PORT   GCS: 127.0.0.1:$GCS_PORT"
  echo "  token: $STATE/auth_token   environment: source $STATE/env"
  if [[ -s $STATE/prometheus.url ]] && kill -0 "$(cat "$STATE/prometheus.pid" 2>/dev/null)" 2>/dev/null; then
    echo "  Prometheus: $(cat "$STATE/prometheus.url") (pid $(cat "$STATE/prometheus.pid"), data $STATE/prometheus); try the query ray_oodstudy_cells"
  elif [[ -s $STATE/prometheus.failed ]]; then
    echo "  $(cat "$STATE/prometheus.failed")"
  elif [[ -e $STATE/prometheus.pid ]]; then
    echo "  Prometheus: stopped (log: $STATE/prometheus.log)"
  elif ! command -v "$PROMETHEUS" > /dev/null; then
    echo "  Prometheus: not installed ('$PROMETHEUS' is not on PATH): apt-get install prometheus, then 'down' and 'up' again"
  fi
  echo "  processes: $(marked_pids | wc -l)"
}

cmd_down() {
  [[ -d $STATE ]] || { echo "no local cluster state at $STATE"; return 0; }
  local pid_file pid left
  # SIGTERM Prometheus, then each node's `ray start --block` (workers first, the head last); on
  # SIGTERM a node stops its own processes.
  for pid_file in $(ls "$STATE"/prometheus.pid 2>/dev/null) $(ls -r "$STATE"/node*.pid 2>/dev/null); do
    kill -TERM "$(cat "$pid_file")" 2>/dev/null || true
  done
  for _ in $(seq 40); do
    [[ -z $(marked_pids) ]] && break
    sleep 0.5
  done
  # anything of this cluster still alive (a job driver in its own session, a stuck worker)
  left=$(marked_pids)
  if [[ -n $left ]]; then
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null || true
    sleep 1
  fi
  left=$(marked_pids)
  [[ -z $left ]] || die "processes of this cluster still alive: $left"
  rm -f "$STATE"/node*.pid "$STATE/env" "$STATE/prometheus.pid" "$STATE/prometheus.url"
  echo "local cluster from $STATE stopped"
}

case "${1:-}" in
  up) cmd_up "${2:-1}" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) [[ -e $STATE/env ]] || die "no local cluster running from $STATE"; echo "$STATE/env" ;;
  *) echo "usage: $0 up [N] | down | status | env" >&2; exit 2 ;;
esac
