# quoteloop developer entry points; `make` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON      ?= python3
VENV        := .venv
STACK_DIR   := $(abspath $(or $(QL_STACK_DIR),.local/stack))
STACK_ENV   := $(STACK_DIR)/env
PYTEST_ARGS ?=
# what the dev stack's scripts see (the test harness uses its own stack dir)
WITH_STACK  := QL_STACK_DIR=$(STACK_DIR)

.PHONY: help venv lock deps lint stack migrate topics run prometheus down test test-faults bench-history bench-latency bench-near-rpc

help: ## list targets
	@echo "usage: make TARGET"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: $(VENV)/.installed ## create .venv (python >= 3.11): requirements-dev.lock (hashes checked), then quoteloop (-e)

# Re-installs only when pyproject.toml or the lock is newer than the stamp. The lock has every
# package (the dev extra's and the build backend's) at one version with its hashes; quoteloop
# itself goes in without dependencies and without build isolation, so nothing unlocked is fetched.
$(VENV)/.installed: pyproject.toml requirements-dev.lock
	@if [ ! -x $(VENV)/bin/python ]; then \
	  command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found (set PYTHON=...)" >&2; exit 1; }; \
	  $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	    || { echo "make: $(PYTHON) is $$($(PYTHON) -V 2>&1); need >= 3.11 (set PYTHON=...)" >&2; exit 1; }; \
	  if ! $(PYTHON) -m venv $(VENV) >/dev/null 2>&1; then \
	    rm -rf $(VENV); \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      echo "make: python venv support missing; apt-get install python3-venv" >&2; \
	      DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null </dev/null; \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null </dev/null; \
	    fi; \
	    $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); echo "make: cannot create $(VENV) (install python3-venv)" >&2; exit 1; }; \
	  fi; \
	fi
	@$(VENV)/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "make: $(VENV) has $$($(VENV)/bin/python -V 2>&1); need >= 3.11 (rm -rf $(VENV))" >&2; exit 1; }
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements-dev.lock
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

# requirements-dev.lock: [project] dependencies, the dev extra and [build-system] requires;
# requirements.lock: the same without the dev extra (at the dev lock's versions), for the hosts
# (ansible/roles/quoteloop). One universal resolution for Python >= 3.11, every package's hashes.
# Pins already in a lock are kept while they satisfy pyproject.toml: LOCK_ARGS=--upgrade (or
# --upgrade-package NAME) takes newer releases.
LOCK_ARGS   ?=
BUILD_REQUIRES := $(VENV)/bin/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")'
UV_COMPILE  := $(VENV)/bin/uv pip compile -q --universal --python-version 3.11 --generate-hashes --custom-compile-command "make lock"

lock: venv ## regenerate requirements-dev.lock and requirements.lock from pyproject.toml; LOCK_ARGS=--upgrade
	$(BUILD_REQUIRES) | $(UV_COMPILE) pyproject.toml - --extra dev $(LOCK_ARGS) -o requirements-dev.lock
	$(BUILD_REQUIRES) | $(UV_COMPILE) pyproject.toml - -c requirements-dev.lock -o requirements.lock

deps: ## PostgreSQL and Prometheus (promtool) binaries (apt-get if missing), Kafka jars (fetched once)
	scripts/stack.sh deps

# The versions are the dev extra's exact pins in pyproject.toml (installed by `venv`); so is the
# configuration ([tool.ruff], [tool.mypy]). `ruff format .` fixes what the format check reports.
lint: venv ## ruff check, ruff format --check, mypy (daemons/core and daemons/venues strict)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

stack: ## start local PostgreSQL + Kafka (scripts/stack.sh up)
	$(WITH_STACK) scripts/stack.sh up

migrate: venv stack ## apply dbmate migrations to the local stack
	. $(STACK_ENV) && $(VENV)/bin/dbmate --url "$$QL_DATABASE_URL?sslmode=disable" \
	  --migrations-dir dbmate/db/migrations --no-dump-schema --wait up

topics: migrate ## create the Kafka topics (qlctl topics ensure)
	. $(STACK_ENV) && $(VENV)/bin/qlctl topics ensure

run: topics ## local stack, simulators, every daemon; walks the first-trade checklist; qlctl status
	$(WITH_STACK) scripts/daemons.sh start simulators all
	. $(STACK_ENV) && . $(STACK_DIR)/sim/env && $(VENV)/bin/python -m qlctl.first_trade
	. $(STACK_ENV) && $(VENV)/bin/qlctl status
	@echo "metrics: GET /metrics on each control socket (curl --unix-socket $(STACK_DIR)/run/<daemon>.sock http://x/metrics)"
	@echo "         and on loopback: $$(scripts/daemons.sh metrics-ports | awk '{printf "%s http://127.0.0.1:%s/metrics  ", $$1, $$2}')"
	@echo "alerts:  make prometheus   (a local Prometheus with the hosts' rules: http://127.0.0.1:19090/alerts)"

prometheus: ## optional local Prometheus scraping the running daemons, with the alert rules (scripts/prometheus.sh up)
	$(WITH_STACK) scripts/prometheus.sh up

down: ## stop daemons and the local stack
	$(WITH_STACK) scripts/prometheus.sh down || true
	$(WITH_STACK) scripts/daemons.sh stop all || true
	$(WITH_STACK) scripts/stack.sh down

# `make test` is what CI runs (.ci/run): `lint` first, the default suite, then the fault matrix in its short CI
# mode (QL_FAULT_SOAK_S=0 whatever the environment says: no soak; the soak is `make test-faults` on purpose).
# Two pytest sessions, each starting its own stack (the matrix's from empty, in .local/fault-stack).
# PYTEST_ARGS applies to the default suite only (a -k for it would deselect the whole matrix);
# FAULT_ARGS to the matrix.
FAULT_ARGS  ?=

test: lint deps ## lint, the default suite, then the fault matrix in CI mode (the harness starts its own stack); PYTEST_ARGS=...
	$(VENV)/bin/python -m pytest -q tests --ignore=tests/faults $(PYTEST_ARGS)
	QL_FAULT_SOAK_S=0 $(VENV)/bin/python -m pytest -q tests/faults $(FAULT_ARGS)

test-faults: venv deps ## fault matrix alone on real daemon processes (own stack; QL_FAULT_SOAK_S=600 adds the soak); FAULT_ARGS=...
	$(VENV)/bin/python -m pytest -q tests/faults $(FAULT_ARGS) $(PYTEST_ARGS)

bench-history: venv deps ## history-writer durable events/s vs COPY (own stack, run on purpose)
	$(VENV)/bin/python bench/history_writer.py $(BENCH_ARGS)

bench-latency: venv deps ## request→answer latency per stage at 50/200/500 per s, in-process and path floors, RSS/CPU (own stack, run on purpose)
	$(VENV)/bin/python bench/latency.py $(BENCH_ARGS)

bench-near-rpc: venv deps ## the stack's NEAR RPC calls/min (at the node) and inventory age at 50 req/s, a third settling, 5 min (own stack, run on purpose)
	$(VENV)/bin/python bench/near_rpc_budget.py $(BENCH_ARGS)
