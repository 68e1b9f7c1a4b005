# Avatar Agents: common tasks. `make help` lists them.
#
# Tools live outside the checkout (see scripts/setup.sh); override any of these:
#   make test AVATAR_CACHE=/tmp/aa-cache PYTHON=python3.12 PYTEST_ARGS="-k fixture -x"

AVATAR_CACHE ?= $(HOME)/.cache/avatar-agents
VENV         ?= $(AVATAR_CACHE)/venv
PYTHON       ?= python3
PYTEST_ARGS  ?=

# The livekit-server binary, looked up as scripts/setup.sh does: $LIVEKIT_SERVER_BIN,
# then livekit-server on PATH, then the one setup builds into the cache. Expanded only
# when a recipe runs, i.e. after `setup` has had its chance to build it. Empty when
# none exists (tests then fall back to LIVEKIT_URL, see tests/livekit_server.py).
LIVEKIT_SERVER_BIN ?= $(firstword $(shell command -v livekit-server 2>/dev/null) \
                                  $(wildcard $(AVATAR_CACHE)/bin/livekit-server))

export AVATAR_CACHE VENV PYTHON LIVEKIT_SERVER_BIN
# Code runs from the checkout, not pip-installed (`make wheel` builds the installable package).
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.DEFAULT_GOAL := help
.PHONY: help setup client ts-client wheel lint test demo cluster bench clean

help:
	@echo "make setup   install/check venv, livekit-server, chromium, client_demo and clients/renderer-ts packages"
	@echo "make client  install client_demo's packages and rebuild the web client (control_api/web)"
	@echo "make ts-client  install and build the TypeScript render client (clients/renderer-ts)"
	@echo "make wheel   build the web client, then the avatar-agents wheel into dist/"
	@echo "make lint    ruff, mypy and the import rules (tests/test_import_rules.py)"
	@echo "make test    lint, then the test suite (pytest) against a throwaway livekit-server"
	@echo "make demo    run the local demo (scripts/demo.sh)"
	@echo "make cluster Redis, two livekit-server nodes, two agent workers, the control API (scripts/cluster.sh)"
	@echo "make bench   run the benchmarks (python -m bench)"
	@echo "make clean   remove caches and build output inside the checkout"
	@echo "cache: $(AVATAR_CACHE)"

setup:
	@bash scripts/setup.sh

client:
	@bash scripts/setup.sh client

# Seed 001's TypeScript client, @avatar-agents/renderer-client: npm ci (once), then tsc into
# clients/renderer-ts/dist/. `make test` runs its tests against the service
# (tests/test_ts_client.py).
ts-client:
	@bash scripts/setup.sh ts-client

# The wheel carries the built web page (control_api/web/) as package data: build it first.
# pip builds it in an isolated environment of its own (setuptools from pyproject's build-system).
# setuptools' scratch folder build/ is emptied first: a module deleted since the last build
# would otherwise still be packed from there. build/, *.egg-info and dist/ are gitignored.
wheel: client
	rm -rf build dist/avatar_agents-*.whl
	$(firstword $(wildcard $(VENV)/bin/python) $(PYTHON)) -m pip wheel --no-deps --wheel-dir dist .
	@ls -1 dist/avatar_agents-*.whl

# Quick checks first: any finding stops `make test` before the long pytest run. The import
# rules (the architecture's arrows) are a test of their own, so the full run skips them.
lint: setup
	@echo "lint: ruff check ."
	@$(VENV)/bin/ruff check --quiet --output-format=concise .
	@echo "lint: mypy"
	@$(VENV)/bin/python -m mypy
	@echo "lint: import rules"
	@$(VENV)/bin/python -m pytest -q --no-header tests/test_import_rules.py

test: lint
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS) --ignore=tests/test_import_rules.py

demo: setup
	bash scripts/demo.sh

# A LiveKit cluster on loopback, as docs/deploy.md lays it out across machines.
cluster: setup
	bash scripts/cluster.sh

bench: setup
	$(VENV)/bin/python -m bench

# Only inside the checkout; the shared cache ($(AVATAR_CACHE)) is left alone.
clean:
	rm -rf .pytest_cache .ruff_cache .mypy_cache .hypothesis build dist client_demo/dist control_api/web \
		control_api/web.old *.egg-info clients/renderer-ts/dist
	find . \( -path ./client_demo/node_modules -o -path ./clients/renderer-ts/node_modules \) -prune \
		-o -name __pycache__ -type d -prune -exec rm -rf {} +
