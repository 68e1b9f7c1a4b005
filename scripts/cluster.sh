#!/usr/bin/env bash
# `make cluster`: a LiveKit cluster on this machine, the way it runs on several (docs/deploy.md):
# a Redis, two livekit-server nodes sharing it, one agent worker registered with each node and
# the control API pointed at the first node. Ctrl+C stops everything. Assumes scripts/setup.sh
# already ran (it installs Debian's redis-server and builds livekit-server).
#
# Environment (all optional):
#   VENV_PY              python of the project venv (default: the cache's venv)
#   LIVEKIT_SERVER_BIN   livekit-server binary (default: on PATH, else the cache's bin/)
#   REDIS_SERVER_BIN     redis-server binary (default: on PATH, else /usr/bin/redis-server)
#   CLUSTER_REDIS_PORT   Redis port (default 6390; no persistence, loopback only)
#   CLUSTER_NODE_A_PORT  node A's signalling port; its ICE/TCP and ICE/UDP ports are the next
#                        two (default 7980, 7981, 7982)
#   CLUSTER_NODE_B_PORT  node B's, likewise (default 7990, 7991, 7992)
#   PORT                 control API / web page port (default 8090)
#   AVATAR_*             read by the workers and the control API as usual (README.md)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CACHE="${AVATAR_CACHE:-$HOME/.cache/avatar-agents}"
VENV_PY="${VENV_PY:-${VENV:-$CACHE/venv}/bin/python}"
REDIS_PORT="${CLUSTER_REDIS_PORT:-6390}"
NODE_A="${CLUSTER_NODE_A_PORT:-7980}"
NODE_B="${CLUSTER_NODE_B_PORT:-7990}"
PORT="${PORT:-8090}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# The cluster's credentials are livekit.yaml's (development only, loopback only).
export LIVEKIT_API_KEY="${LIVEKIT_API_KEY:-devkey}"
export LIVEKIT_API_SECRET="${LIVEKIT_API_SECRET:-avatar-agents-local-dev-secret-0123456789}"

LOG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/avatar-cluster.XXXXXX")"
PIDS=()
NAMES=()
say() { printf '[cluster] %s\n' "$*" 2>/dev/null || true; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }

for port_var in REDIS_PORT NODE_A NODE_B PORT; do
  [[ "${!port_var}" =~ ^[0-9]{1,5}$ ]] || die "$port_var=${!port_var} is not a port number"
done
[[ -x "$VENV_PY" ]] || die "no python at $VENV_PY; run \`make setup\`"
lk_bin="${LIVEKIT_SERVER_BIN:-$(command -v livekit-server || echo "$CACHE/bin/livekit-server")}"
[[ -x "$lk_bin" ]] || die "livekit-server not found ($lk_bin); run \`make setup\`"
redis_bin="${REDIS_SERVER_BIN:-$(command -v redis-server || echo /usr/bin/redis-server)}"
[[ -x "$redis_bin" ]] || die "redis-server not found ($redis_bin); run \`make setup\`"

# Each child in a session of its own (setsid): stopping its process group also stops what it
# spawned (the workers' job processes). See scripts/demo.sh.
SETSID=()
command -v setsid >/dev/null && SETSID=(setsid)
start() {  # start NAME CMD...
  local name="$1"; shift
  "${SETSID[@]}" "$@" </dev/null >"$LOG_DIR/$name.log" 2>&1 &
  PIDS+=("$!")
  NAMES+=("$name")
  say "started $name (pid $!, log $LOG_DIR/$name.log)"
}
alive() { kill -0 "$1" 2>/dev/null; }
stop() {
  local pid="$1" i
  alive "$pid" || return 0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
  alive "$pid" && { kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; }
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  trap - EXIT INT TERM
  trap '' PIPE
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop "${PIDS[i]}"; done
  say "stopped; logs kept in $LOG_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_for() {  # wait_for NAME TIMEOUT_S CHECK...
  local name="$1" timeout="$2" i
  shift 2
  for ((i = 0; i < timeout * 5; i++)); do
    "$@" && return 0
    alive "${PIDS[-1]}" || { tail -n 30 "$LOG_DIR/$name.log" >&2; die "$name exited"; }
    sleep 0.2
  done
  tail -n 30 "$LOG_DIR/$name.log" >&2
  die "$name did not come up within $timeout s"
}
http_ok() {
  "$VENV_PY" -I -S -c '
import sys, urllib.request
urllib.request.build_opener(urllib.request.ProxyHandler({})).open(sys.argv[1], timeout=1)
' "$1" >/dev/null 2>&1
}
redis_ok() { "$VENV_PY" -I -S -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"PING\r\n"); sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)
' "$REDIS_PORT" 2>/dev/null; }
log_has() { grep -q "$2" "$LOG_DIR/$1.log" 2>/dev/null; }

# --- Redis: no persistence (rooms and dispatch state are live state, not data) ------------------
start redis "$redis_bin" --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
  --dir "$LOG_DIR"
wait_for redis 10 redis_ok

# --- two livekit-server nodes: livekit.yaml, their own ports, the same Redis -------------------
for node in a b; do
  if [[ $node == a ]]; then port=$NODE_A; else port=$NODE_B; fi
  start "livekit-$node" "$lk_bin" --config livekit.yaml --port "$port" \
    --rtc.tcp_port "$((port + 1))" --udp-port "$((port + 2))" --redis-host "127.0.0.1:$REDIS_PORT"
  wait_for "livekit-$node" 30 http_ok "http://127.0.0.1:$port"
done

# --- one agent worker per node ---------------------------------------------------------------
for node in a b; do
  if [[ $node == a ]]; then port=$NODE_A; else port=$NODE_B; fi
  start "agent-$node" env LIVEKIT_URL="ws://127.0.0.1:$port" "$VENV_PY" -m agent dev
  wait_for "agent-$node" 90 log_has "agent-$node" "registered worker"
done

# --- the control API, on node A ----------------------------------------------------------------
start control_api env LIVEKIT_URL="ws://127.0.0.1:$NODE_A" "$VENV_PY" -m control_api --port "$PORT"
wait_for control_api 30 http_ok "http://127.0.0.1:$PORT/health"

echo
say "ready: Redis 127.0.0.1:$REDIS_PORT, nodes ws://127.0.0.1:$NODE_A and ws://127.0.0.1:$NODE_B"
say "control API and page: http://127.0.0.1:$PORT/ (API key: the cache's control-api-key)"
say "logs: $LOG_DIR; Ctrl+C stops everything"
set +e
wait -n "${PIDS[@]}"
set -e
for i in "${!PIDS[@]}"; do
  alive "${PIDS[i]}" || die "${NAMES[i]} exited unexpectedly; see $LOG_DIR/${NAMES[i]}.log"
done
