#!/usr/bin/env bash
# Prepare everything the project needs to run, test and demo, idempotently.
#
#   1. a Python virtualenv with the dependencies from pyproject.toml
#   2. a livekit-server binary (or an external server given by LIVEKIT_URL)
#   3. Chromium for the browser tests
#   4. the client_demo node packages (when client_demo/package.json exists), and the web
#      page built into control_api/web/ (esbuild; rebuilt only when its sources changed),
#      where the control API serves it from and a wheel carries it; and seed 001's TypeScript
#      client, clients/renderer-ts: its node packages, compiled by tsc into its dist/
#   5. MediaPipe's face models (`python -m avatar_runtime download-files`: .tflite files
#      taken from the mediapipe wheel on PyPI)
#   6. public-domain test portraits (scripts/fetch_portraits.py: images taken from the
#      face_recognition sdist and the matplotlib wheel on PyPI, cropped)
#
# Everything is cached outside the checkout, under AVATAR_CACHE, so several
# checkouts (a CI clone, a work tree) share one set of tools. The project itself is
# not pip-installed here: code runs from the checkout (PYTHONPATH / pytest pythonpath);
# `make wheel` builds the installable package.
#
# Environment:
#   AVATAR_CACHE          cache root                (default: $HOME/.cache/avatar-agents)
#   VENV                  virtualenv                (default: $AVATAR_CACHE/venv)
#   PYTHON                interpreter for the venv  (default: python3)
#   AVATAR_EXTRAS         pyproject extras besides "dev", comma separated (default:
#                         piper,s3,cloud,wav2lip,ditto,musetalk: the offline voice, S3
#                         uploads, the provider plugins used when their API keys are set, the
#                         neural renderers' torch and ONNX Runtime, transformers for Ditto's
#                         HuBERT export and MuseTalk's Whisper, and diffusers for MuseTalk's
#                         UNet and VAE; the tests use all of them)
#   LIVEKIT_SERVER_BIN    use this livekit-server binary
#   LIVEKIT_URL           external server to use when no binary is available
#   AVATAR_SKIP_BROWSER=1 do not check for / install Chromium
#   AVATAR_MODELS_DIR     where renderers/vision looks for the models instead of the cache
#
# A second run with nothing to do takes well under a few seconds.
#
#   scripts/setup.sh          everything above
#   scripts/setup.sh client   only step 4's web client, rebuilt even if it looks current
#   scripts/setup.sh ts-client  only step 4's TypeScript client, rebuilt even if it looks current
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AVATAR_CACHE="${AVATAR_CACHE:-$HOME/.cache/avatar-agents}"
VENV="${VENV:-$AVATAR_CACHE/venv}"
PYTHON="${PYTHON:-python3}"
LIVEKIT_SERVER_VERSION="v1.13.5"
LIVEKIT_SERVER_MODULE="github.com/livekit/livekit-server/cmd/server"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

mkdir -p "$AVATAR_CACHE"

# Two checkouts running setup at once must not pip-install into one venv together.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$AVATAR_CACHE/.setup.lock"
    flock 9
fi

# --------------------------------------------------------------------------- python
python_ok() {  # python_ok INTERPRETER: true when it runs and satisfies requires-python
    "$1" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 13)))' \
        >/dev/null 2>&1
}

setup_python() {
    command -v "$PYTHON" >/dev/null 2>&1 \
        || die "'$PYTHON' not found; install Python 3.11 or 3.12, or set PYTHON=/path/to/python3.11"
    python_ok "$PYTHON" \
        || die "$PYTHON is $("$PYTHON" -V 2>&1); this project needs Python 3.11 or 3.12" \
               "(set PYTHON=...)"

    if [[ -e "$VENV" ]] && ! python_ok "$VENV/bin/python"; then
        # Only ever delete something that is a virtualenv (VENV may be overridden).
        [[ -f "$VENV/pyvenv.cfg" ]] || die "VENV=$VENV exists but is not a virtualenv"
        say "venv $VENV is broken or has the wrong Python; recreating it"
        rm -rf "$VENV"
    fi
    if [[ ! -x "$VENV/bin/python" ]]; then
        say "creating venv $VENV"
        "$PYTHON" -m venv "$VENV" \
            || die "could not create a venv (on Debian: apt-get install python3-venv)"
    fi

    # The requirement list: [project].dependencies, the dev extra and AVATAR_EXTRAS.
    local reqs
    reqs="$(AVATAR_EXTRAS="${AVATAR_EXTRAS-piper,s3,cloud,wav2lip,ditto,musetalk}" "$PYTHON" - \
            "$ROOT/pyproject.toml" <<'PY'
import os, re, sys, tomllib

with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
extras = ["dev"] + [e for e in re.split(r"[,\s]+", os.environ["AVATAR_EXTRAS"]) if e]
optional = project.get("optional-dependencies", {})
reqs = list(project.get("dependencies", []))
# An extra may name others of this project ("avatar-agents[piper,cloud]", as `all` does):
# expand those here, since the project itself is not what gets installed.
self_ref = re.compile(re.escape(project["name"]) + r"\[([^\]]*)\]\s*$", re.IGNORECASE)
seen = set()
while extras:
    extra = extras.pop(0)
    if extra in seen:
        continue
    seen.add(extra)
    if extra not in optional:
        known = ", ".join(optional)
        sys.exit(f"setup: ERROR: unknown extra {extra!r} (pyproject.toml has: {known})")
    for req in optional[extra]:
        inner = self_ref.match(req.strip())
        if inner:
            extras += [e.strip() for e in inner.group(1).split(",") if e.strip()]
        else:
            reqs.append(req)
print("\n".join(dict.fromkeys(reqs)))
PY
)"
    # The venv's Python version is part of the key: a rebuilt interpreter gets fresh deps.
    local key stamp
    key="$(printf '%s\n%s\n' "$("$VENV/bin/python" -V 2>&1)" "$reqs" | sha256sum | cut -c1-16)"
    stamp="$VENV/.deps-$key"
    if [[ -e "$stamp" ]]; then
        say "python deps up to date ($VENV)"
        return
    fi
    say "installing python deps into $VENV (first run takes a few minutes)"
    local reqfile="$VENV/.requirements.txt"
    printf '%s\n' "$reqs" >"$reqfile"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$reqfile" \
        || die "pip install failed (requirements: $reqfile)"
    rm -f "$VENV"/.deps-*   # pins may have gone back and forth: only the newest stamp is true
    : >"$stamp"
    say "python deps installed"
}

# --------------------------------------------------------------------------- models
# renderers/vision runs MediaPipe's face models on LiteRT; `python -m avatar_runtime
# download-files` (renderers/vision/download.py, the same step an installed package's users
# run) takes them out of the mediapipe wheel once, into $AVATAR_CACHE/models/ or
# AVATAR_MODELS_DIR. The quick check first keeps a second run from importing livekit.
setup_models() {
    local pythonpath="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    if PYTHONPATH="$pythonpath" "$VENV/bin/python" -c '
import sys
from renderers.vision.download import missing_models
from renderers.vision.models import models_dir
missing = missing_models()
if not missing:
    print(f"setup: face models up to date ({models_dir()})")
sys.exit(1 if missing else 0)
' 2>/dev/null; then
        return
    fi
    PYTHONPATH="$pythonpath" "$VENV/bin/python" -m avatar_runtime download-files \
        || die "could not fetch the face models (python -m avatar_runtime download-files)"
}

# ------------------------------------------------------------------------ portraits
# Public-domain portraits that meshwarp's tests and scripts/meshwarp_before_after.py use
# besides the bundled astronaut: taken out of two PyPI archives (face_recognition's sdist,
# matplotlib's wheel) by scripts/fetch_portraits.py into $AVATAR_CACHE/portraits/. The file
# check first keeps a second run from starting Python.
setup_portraits() {
    local dir="$AVATAR_CACHE/portraits" name
    for name in obama obama2 biden grace_hopper; do
        [[ -f "$dir/$name.png" ]] || {
            PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" AVATAR_CACHE="$AVATAR_CACHE" \
                "$VENV/bin/python" "$ROOT/scripts/fetch_portraits.py" \
                || die "could not fetch the test portraits (scripts/fetch_portraits.py)"
            return
        }
    done
    say "test portraits up to date ($dir)"
}

# ------------------------------------------------------------------- livekit-server
find_go() {
    if command -v go >/dev/null 2>&1; then command -v go
    elif [[ -x /usr/local/go/bin/go ]]; then echo /usr/local/go/bin/go
    else return 1
    fi
}

LIVEKIT_BIN=""

setup_livekit_server() {
    local go_bin
    if [[ -n "${LIVEKIT_SERVER_BIN:-}" ]]; then
        [[ -x "$LIVEKIT_SERVER_BIN" ]] \
            || die "LIVEKIT_SERVER_BIN=$LIVEKIT_SERVER_BIN is not an executable file"
        LIVEKIT_BIN="$LIVEKIT_SERVER_BIN"
    elif command -v livekit-server >/dev/null 2>&1; then
        LIVEKIT_BIN="$(command -v livekit-server)"
    elif [[ -x "$AVATAR_CACHE/bin/livekit-server" ]]; then
        LIVEKIT_BIN="$AVATAR_CACHE/bin/livekit-server"
    elif go_bin="$(find_go)"; then
        say "building livekit-server $LIVEKIT_SERVER_VERSION with" \
            "$("$go_bin" version | cut -d' ' -f3) (2-5 minutes, once)"
        mkdir -p "$AVATAR_CACHE/gobin" "$AVATAR_CACHE/bin"
        # Run outside the checkout so that no go.mod / go.work of ours can interfere.
        # Go's module and build caches stay where Go keeps them (~/go, ~/.cache/go-build).
        local build_log="$AVATAR_CACHE/livekit-server-build.log"
        if ! (cd "$AVATAR_CACHE" && GOBIN="$AVATAR_CACHE/gobin" "$go_bin" install \
                "$LIVEKIT_SERVER_MODULE@$LIVEKIT_SERVER_VERSION") >"$build_log" 2>&1; then
            tail -n 20 "$build_log" >&2
            die "go install $LIVEKIT_SERVER_MODULE@$LIVEKIT_SERVER_VERSION failed (log: $build_log)"
        fi
        # Go names the binary after its package directory, "server".
        mv -f "$AVATAR_CACHE/gobin/server" "$AVATAR_CACHE/bin/livekit-server"
        LIVEKIT_BIN="$AVATAR_CACHE/bin/livekit-server"
    elif [[ -n "${LIVEKIT_URL:-}" ]]; then
        say "livekit-server: none installed; using the external server LIVEKIT_URL=$LIVEKIT_URL"
        return
    else
        cat >&2 <<EOF
setup: ERROR: no livekit-server found. Do one of:
  - install Go >= 1.26 (https://go.dev/dl/, e.g. into /usr/local/go) and rerun 'make setup';
  - build it yourself and put it on PATH or at $AVATAR_CACHE/bin/livekit-server:
      GOBIN=$AVATAR_CACHE/gobin go install $LIVEKIT_SERVER_MODULE@$LIVEKIT_SERVER_VERSION
      mkdir -p $AVATAR_CACHE/bin && cp $AVATAR_CACHE/gobin/server $AVATAR_CACHE/bin/livekit-server
  - or point at a server you already run:
      export LIVEKIT_URL=ws://host:7880 LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=...
EOF
        exit 1
    fi
    local version
    version="$("$LIVEKIT_BIN" --version 2>&1)" || die "$LIVEKIT_BIN does not run: $version"
    say "livekit-server ${version##* } ($LIVEKIT_BIN)"
}

# -------------------------------------------------------------- system packages (apt)
CHROMIUM_BIN=""

# Debian packages the project uses: chromium (+ fonts) for browser tests, PortAudio for the
# agent's `console` mode (sounddevice loads it even for --text), redis-server and postgresql
# for the multi-node and shared-store tests.
missing_system_packages() {
    local missing=()
    if [[ "${AVATAR_SKIP_BROWSER:-0}" != "1" && ! -x /usr/bin/chromium ]]; then
        missing+=(chromium fonts-liberation)
    fi
    ldconfig -p 2>/dev/null | grep -q 'libportaudio\.so\.2' || missing+=(libportaudio2)
    # Multi-node and shared-store tests: LiveKit nodes share a Redis; jobs may live in PostgreSQL.
    command -v redis-server >/dev/null 2>&1 || [[ -x /usr/bin/redis-server ]] || missing+=(redis-server)
    command -v pg_ctl >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null \
        || missing+=(postgresql)
    echo "${missing[@]}"
}

setup_system_packages() {
    local missing
    missing="$(missing_system_packages)"
    if [[ -n "$missing" ]]; then
        if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
            say "installing $missing with apt-get (takes a minute once)"
            DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
                || die "apt-get update failed"
            # shellcheck disable=SC2086  # word splitting of the package list is intended
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends 2>/dev/null \
                $missing >/dev/null || die "apt-get install $missing failed"
        else
            say "WARNING: missing Debian packages: $missing. Install them with:"
            say "  sudo apt-get update && sudo apt-get install -y $missing"
            say "  (AVATAR_SKIP_BROWSER=1 skips chromium)"
        fi
    fi
    if [[ "${AVATAR_SKIP_BROWSER:-0}" == "1" ]]; then
        say "chromium: skipped (AVATAR_SKIP_BROWSER=1)"
    elif [[ -x /usr/bin/chromium ]]; then
        CHROMIUM_BIN=/usr/bin/chromium
        say "chromium ok ($CHROMIUM_BIN)"
    fi
}

# ------------------------------------------------------------------- node packages
# npm_install DIR LABEL: DIR's node_modules as its package-lock.json says (npm ci), once: a
# second run with nothing changed only compares two files' times. npm keeps its download cache
# where it always does (~/.npm), outside the checkout; node_modules is gitignored.
npm_install() {
    local dir="$1" label="$2"
    if [[ ! -f "$dir/package.json" ]]; then
        say "$label: no package.json yet, nothing to install"
        return
    fi
    command -v npm >/dev/null 2>&1 \
        || die "npm not found; install Node.js >= 20 with npm (e.g. apt-get install -y nodejs npm)"
    local lock="$dir/package-lock.json" marker="$dir/node_modules/.package-lock.json"
    local want="$lock"
    [[ -f "$lock" ]] || want="$dir/package.json"
    if [[ -f "$marker" && ! "$want" -nt "$marker" ]]; then
        say "$label node_modules up to date"
        return
    fi
    if [[ -f "$lock" ]]; then
        say "$label: npm ci"
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) \
            || die "npm ci failed in $dir"
    else
        say "$label: npm install (no package-lock.json; please commit the one it writes)"
        (cd "$dir" && npm install --no-audit --no-fund --loglevel=error >/dev/null) \
            || die "npm install failed in $dir"
    fi
    # npm leaves the marker's mtime alone when nothing changed; make it newer than the lock.
    [[ -f "$marker" ]] && touch "$marker"
    say "$label node_modules installed"
}

# ---------------------------------------------------------------------- client_demo
setup_node() {
    npm_install "$ROOT/client_demo" client_demo
}

# ------------------------------------------------- clients/renderer-ts (seed 001's client)
# @avatar-agents/renderer-client: TypeScript compiled by tsc into clients/renderer-ts/dist/
# (gitignored), rebuilt only when a source changed (tsc is incremental besides).
TS_CLIENT="$ROOT/clients/renderer-ts"

setup_ts_client() {  # setup_ts_client [force]
    npm_install "$TS_CLIENT" renderer-ts
    [[ -f "$TS_CLIENT/package.json" ]] || return 0
    local out="$TS_CLIENT/dist/.tsbuildinfo"
    if [[ "${1:-}" != "force" && -f "$out" ]] \
        && [[ -z "$(find "$TS_CLIENT/src" "$TS_CLIENT/examples" "$TS_CLIENT/test" \
                    "$TS_CLIENT/jest" "$TS_CLIENT/tsconfig.json" "$TS_CLIENT/package-lock.json" \
                    -newer "$out" -print -quit 2>/dev/null)" ]]; then
        say "renderer-ts client up to date (clients/renderer-ts/dist)"
        return
    fi
    say "renderer-ts: building the TypeScript client (npm run build)"
    (cd "$TS_CLIENT" && npm run --silent build) || die "npm run build failed in $TS_CLIENT"
    # tsc leaves an up-to-date build info file alone: date it for the check above.
    touch "$out"
    say "renderer-ts client built (clients/renderer-ts/dist)"
}

# The page: client_demo/ (index.html, style.css, src/ bundled with livekit-client by esbuild)
# built into control_api/web/ by client_demo/scripts/build.mjs (`npm run build`).
build_client() {  # build_client [force]
    local dir="$ROOT/client_demo" out="$ROOT/control_api/web/dist/app.js"
    [[ -f "$dir/package.json" && -d "$dir/src" ]] || return 0
    if [[ "${1:-}" != "force" && -f "$out" ]] \
        && [[ -z "$(find "$dir/src" "$dir/package.json" "$dir/package-lock.json" \
                    "$dir/index.html" "$dir/style.css" "$dir/scripts/build.mjs" \
                    -newer "$out" -print -quit 2>/dev/null)" ]]; then
        say "web client up to date (control_api/web)"
        return
    fi
    say "client_demo: building the web client (npm run build)"
    (cd "$dir" && npm run --silent build) || die "npm run build failed in $dir"
    say "web client built (control_api/web)"
}

# ---------------------------------------------------------------------------- env.sh
write_env() {
    # For humans and scripts: `. "$AVATAR_CACHE/env.sh"`. The Makefile finds paths itself.
    local env_file="$AVATAR_CACHE/env.sh" content
    content="# Written by scripts/setup.sh; sourced by humans and scripts, safe to delete.
export AVATAR_CACHE=\"$AVATAR_CACHE\"
export VENV=\"$VENV\"
export LIVEKIT_SERVER_BIN=\"$LIVEKIT_BIN\"
export CHROMIUM_BIN=\"$CHROMIUM_BIN\""
    if [[ ! -f "$env_file" ]] || [[ "$(cat "$env_file")" != "$content" ]]; then
        printf '%s\n' "$content" >"$env_file"
    fi
}

case "${1:-all}" in
    client)
        setup_node
        build_client force
        ;;
    ts-client)
        setup_ts_client force
        ;;
    all)
        setup_python
        setup_models
        setup_portraits
        setup_livekit_server
        setup_system_packages
        setup_node
        build_client
        setup_ts_client
        write_env
        ;;
    *)
        die "unknown step '$1' (usage: scripts/setup.sh [client|ts-client])"
        ;;
esac
