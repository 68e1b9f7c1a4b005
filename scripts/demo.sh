#!/usr/bin/env bash
# `make demo`: run livekit-server, the agent worker and the control API together, print the
# page's URL, and stop everything on Ctrl+C or exit. Assumes scripts/setup.sh already ran.
#
# Needs nothing set: every variable below is optional.
#
# Environment:
#   VENV_PY             python of the project venv ($VENV/bin/python, else the cache's venv)
#   LIVEKIT_SERVER_BIN  livekit-server binary (default: on PATH, else the cache's bin/)
#   LIVEKIT_URL         (here or in .env) a non-local URL means: use that server, start none;
#                       ws://127.0.0.1:N or ws://localhost:N: start one on port N unless one
#                       already answers there (default ws://127.0.0.1:$LIVEKIT_PORT)
#   LIVEKIT_PORT        the started livekit-server's signalling port when LIVEKIT_URL is not
#                       set (default 7880, as in livekit.yaml)
#   LIVEKIT_RTC_TCP_PORT, LIVEKIT_RTC_UDP_PORT
#                       its ICE/TCP and ICE/UDP media ports (default 7881 and 7882)
#   PORT                control API / web page port (default 8080)
#   AVATAR_API_KEYS, AVATAR_API_AUTH, ...  read by the control API (see README.md)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CACHE="${AVATAR_CACHE:-$HOME/.cache/avatar-agents}"
VENV_PY="${VENV_PY:-${VENV:-$CACHE/venv}/bin/python}"
PORT="${PORT:-8080}"
LIVEKIT_PORT="${LIVEKIT_PORT:-7880}"
LIVEKIT_RTC_TCP_PORT="${LIVEKIT_RTC_TCP_PORT:-7881}"
LIVEKIT_RTC_UDP_PORT="${LIVEKIT_RTC_UDP_PORT:-7882}"
# The code runs from the checkout, never pip-installed; agent job processes need this too.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

LOG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/avatar-demo.XXXXXX")"
PIDS=()
NAMES=()

if [[ -t 1 ]]; then B=$'\033[1m' R=$'\033[31m' N=$'\033[0m'; else B='' R='' N=''; fi
say() { printf '%s[demo]%s %s\n' "$B" "$N" "$*" 2>/dev/null || true; }
die() { printf '%s[demo] error:%s %s\n' "$R" "$N" "$*" >&2; exit 1; }

[[ -x "$VENV_PY" ]] || die "no python at $VENV_PY; run \`make setup\` (or set VENV_PY)"
for port_var in PORT LIVEKIT_PORT LIVEKIT_RTC_TCP_PORT LIVEKIT_RTC_UDP_PORT; do
  port="${!port_var}"
  if ! [[ "$port" =~ ^[0-9]{1,5}$ ]] || ((10#$port < 1 || 10#$port > 65535)); then
    die "$port_var=$port is not a port number (1-65535)"
  fi
done

# Each child runs in a session of its own (setsid), so stopping its process group also stops
# whatever it spawned (the agent forks job processes), and Ctrl+C reaches only this script,
# which then shuts the children down in order. A background child of a script is never a
# group leader, so setsid execs in place and $! is the command's pid and its group id.
SETSID=()
command -v setsid >/dev/null && SETSID=(setsid)

start() {  # start NAME CMD...: run CMD in the background, logging to $LOG_DIR/NAME.log
  local name="$1"; shift
  "${SETSID[@]}" "$@" </dev/null >"$LOG_DIR/$name.log" 2>&1 &
  PIDS+=("$!")
  NAMES+=("$name")
  say "started $name (pid $!, log $LOG_DIR/$name.log)"
}

alive() { kill -0 "$1" 2>/dev/null; }

stop() {  # stop PID NAME: TERM the process group, KILL it if it is still there after 10 s
  local pid="$1" name="$2" i
  alive "$pid" || return 0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    say "$name did not stop in 10 s; killing it"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  trap - EXIT INT TERM
  # If our stdout is gone (e.g. `make demo | tee` and tee died), a message must not kill us
  # by SIGPIPE before the children are stopped.
  trap '' PIPE
  local i
  if ((${#PIDS[@]})); then
    say "stopping..."
    # Reverse start order: the API and the agent leave before livekit-server goes away.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
      stop "${PIDS[i]}" "${NAMES[i]}"
    done
  fi
  say "logs kept in $LOG_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail_with_log() {  # fail_with_log NAME MESSAGE
  echo "----- last lines of $LOG_DIR/$1.log -----" >&2
  tail -n 30 "$LOG_DIR/$1.log" >&2 || true
  die "$2"
}

wait_until() {  # wait_until NAME PID TIMEOUT_S CHECK...: poll CHECK while PID is alive
  local name="$1" pid="$2" timeout="$3" i
  shift 3
  for ((i = 0; i < timeout * 5; i++)); do
    "$@" && return 0
    alive "$pid" || fail_with_log "$name" "$name exited during startup"
    sleep 0.2
  done
  return 1
}

# True when URL answers with a 2xx status within 1 s. The venv's python rather than curl, which
# a fresh machine may lack; -I -S: stdlib only, fast to start; no proxy for loopback probes.
http_ok() {
  "$VENV_PY" -I -S -c '
import sys, urllib.request
urllib.request.build_opener(urllib.request.ProxyHandler({})).open(sys.argv[1], timeout=1)
' "$1" >/dev/null 2>&1
}
log_has() { grep -q "$2" "$LOG_DIR/$1.log" 2>/dev/null; }

# LIVEKIT_URL may come from the shell or from .env (shell wins, as in the Python code).
livekit_url="${LIVEKIT_URL:-}"
if [[ -z "$livekit_url" && -f .env ]]; then
  livekit_url="$("$VENV_PY" -c \
    'from dotenv import dotenv_values; print(dotenv_values(".env").get("LIVEKIT_URL") or "")')"
fi
livekit_url="${livekit_url:-ws://127.0.0.1:$LIVEKIT_PORT}"
# The agent and the control API read LIVEKIT_URL too (environment before .env): give them the
# server this script settled on.
export LIVEKIT_URL="$livekit_url"

# --- livekit-server ------------------------------------------------------------------------
if [[ "$livekit_url" =~ ^ws://(127\.0\.0\.1|localhost):([0-9]+)/?$ ]]; then
  lk_port="${BASH_REMATCH[2]}"
  if http_ok "http://127.0.0.1:$lk_port"; then
    say "livekit-server already answers on 127.0.0.1:$lk_port; using it"
  else
    lk_bin="${LIVEKIT_SERVER_BIN:-}"
    [[ -n "$lk_bin" ]] || lk_bin="$(command -v livekit-server || true)"
    [[ -n "$lk_bin" ]] || lk_bin="$CACHE/bin/livekit-server"
    [[ -x "$lk_bin" ]] || die "livekit-server not found ($lk_bin); run \`make setup\`"
    [[ -f livekit.yaml ]] || die "livekit.yaml is missing from $ROOT"
    # livekit.yaml with the ports given here (flags win over the file).
    start livekit "$lk_bin" --config livekit.yaml --port "$lk_port" \
      --rtc.tcp_port "$LIVEKIT_RTC_TCP_PORT" --udp-port "$LIVEKIT_RTC_UDP_PORT"
    wait_until livekit "${PIDS[-1]}" 30 http_ok "http://127.0.0.1:$lk_port" \
      || fail_with_log livekit "livekit-server did not answer on :$lk_port within 30 s"
    say "livekit-server is up at $livekit_url"
  fi
else
  say "using the LiveKit server at $livekit_url (not starting one)"
fi

# --- agent worker --------------------------------------------------------------------------
if [[ -f agent/__main__.py ]]; then
  start agent "$VENV_PY" -m agent dev
  # Model loading can take a while; a slow start is only a warning, a crash is fatal.
  if wait_until agent "${PIDS[-1]}" 90 log_has agent "registered worker"; then
    say "agent worker registered"
  else
    say "warning: agent has not registered after 90 s; see $LOG_DIR/agent.log"
  fi
else
  say "warning: agent/__main__.py does not exist yet; running without an agent"
fi

# --- control API + page --------------------------------------------------------------------
# Something else answering on the port would pass the readiness check below while our API
# fails to bind.
if http_ok "http://127.0.0.1:$PORT/health"; then
  die "port $PORT already answers (another demo still running?); stop it or set PORT=..."
fi
start control_api "$VENV_PY" -m control_api --port "$PORT"
wait_until control_api "${PIDS[-1]}" 30 http_ok "http://127.0.0.1:$PORT/health" \
  || fail_with_log control_api "control API did not answer on :$PORT within 30 s"

# The page needs an API key: the one the control API accepts, worked out by its own code from
# the same environment and .env: the first of AVATAR_API_KEYS, else the key it generated into
# the cache; none with AVATAR_API_AUTH=disabled or JWTs only. The fragment (#...) never reaches
# the server's logs.
api_key="$("$VENV_PY" - <<'PY' 2>/dev/null || true
from control_api.config import Settings
from control_api.security import ensure_credentials

settings, _ = ensure_credentials(Settings.from_env())
if settings.auth != "disabled" and settings.api_keys:
    print(settings.api_keys[0])
PY
)"
page="http://127.0.0.1:$PORT/"
if [[ -n "$api_key" ]]; then
  page="${page}#api_key=$api_key"
fi

echo
say "ready: open $page and press Join"
say "API docs: http://127.0.0.1:$PORT/docs"
say "logs: $LOG_DIR"
say "press Ctrl+C to stop"
echo

# Stay up until Ctrl+C or until one of the children exits on its own.
set +e
wait -n "${PIDS[@]}"
set -e
for i in "${!PIDS[@]}"; do
  alive "${PIDS[i]}" || fail_with_log "${NAMES[i]}" "${NAMES[i]} exited unexpectedly"
done
