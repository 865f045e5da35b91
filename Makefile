# device-activity: see docs/contract.md. Only `make test` has to work on a fresh machine by itself:
# it builds the venv from uv.lock, and its fixtures provision Redis (apt-get) and Kafka (Maven).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY = $(VENV)/bin/python
# pyproject.toml asks for 3.11 or 3.12; prefer those over whatever `python3` is.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || echo python3)
RUN_DIR ?= $(or $(DEVACT_RUN_DIR),.run)
export DEVACT_RUN_DIR := $(abspath $(RUN_DIR))
export VENV

# Every install comes from uv.lock (exact versions and hashes), through one pinned uv that is
# itself installed by hash from scripts/uv-requirements.txt, once, into the cache beside Kafka's.
UV_VERSION = 0.13.10
CACHE_DIR ?= $(or $(DEVACT_CACHE_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/device-activity)
UV_HOME = $(CACHE_DIR)/uv-$(UV_VERSION)
UV = $(UV_HOME)/bin/uv
# uv syncs the project into $(VENV), with the interpreter above, never one it downloads.
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON_DOWNLOADS := never
# (The interpreter's own path: uv takes a pyenv shim for another interpreter and rebuilds the venv.)
export UV_PYTHON := $(shell $(PYTHON) -c 'import sys; print(sys.executable)')
# The environment of `make install` and `make test`; `make bench` adds its own extra.
SYNC = $(UV) sync --frozen --extra dev

# devtools.services is stdlib only: stopping must work even without the venv.
SERVICES = $(if $(wildcard $(PY)),$(PY),$(PYTHON)) -m devtools.services
SOURCES = stream api state devact devtools tests bench

.PHONY: help install lock-check lock upgrade audit services services-down run stop test bench \
	lint fmt clean

help:
	@echo "make install | test | run | stop | services | services-down | lint | fmt | bench"
	@echo "     lock | upgrade | audit | clean"

# A no-op in well under a second when .venv already matches uv.lock, so every target runs it:
# what is installed is always exactly the lock (a package the lock lacks is removed).
install: lock-check
	$(SYNC)

$(UV):
	@# Debian's python3 lacks ensurepip until python3-venv is installed.
	$(PYTHON) -m venv $(UV_HOME) || { apt-get update && apt-get install -y python3-venv \
		&& $(PYTHON) -m venv $(UV_HOME); }
	$(UV_HOME)/bin/pip install --quiet --no-deps --require-hashes -r scripts/uv-requirements.txt

# A uv.lock that no longer matches pyproject.toml stops here, before anything is installed.
# --offline: the check reads only the two files, so it answers the same without a network.
lock-check: $(UV)
	@$(UV) lock --check --offline --quiet 2>/dev/null || { \
		echo "uv.lock does not match pyproject.toml: run 'make lock' (or 'make upgrade' for the" \
			"newest versions allowed), run the tests, and commit uv.lock." >&2; exit 1; }

# Re-resolve within pyproject.toml's ranges, keeping every pin that still fits.
lock: $(UV)
	$(UV) lock

# Re-resolve to the newest versions pyproject.toml allows.
upgrade: $(UV)
	$(UV) lock --upgrade

# Known vulnerabilities of every locked package (all extras), from the OSV database. Needs
# network access to api.osv.dev, which this project's build machines do not have: operators run
# it where they can (docs/operations.md, "Dependencies").
audit: $(UV)
	$(UV) audit --frozen --preview-features audit-command

services: install
	$(SERVICES) up

services-down:
	$(SERVICES) down

run: install services
	scripts/run.sh start

stop:
	scripts/run.sh stop
	$(SERVICES) down

test: install
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/mypy
	scripts/ensure-compose.sh
	@# Grafana's admin password is the operator's own; any value validates the file.
	GRAFANA_ADMIN_PASSWORD=validate docker compose config -q && echo "docker-compose.yml: valid"
	@# The session fixtures of tests/integration/conftest.py start Kafka and Redis (and the local
	@# Redis Cluster when a suite runs on it) on free ports and stop them.
	$(PY) -m pytest

# Starts its own Kafka, Redis and PostgreSQL (installing PostgreSQL and wrk from Debian when
# missing) and writes bench/results/. QUICK=1: smaller data, about 4 minutes.
bench: lock-check
	$(SYNC) --extra bench
	$(PY) -m bench $(if $(QUICK),--quick)

lint: install
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/ruff format --check $(SOURCES)
	$(VENV)/bin/mypy

fmt: install
	$(VENV)/bin/ruff format $(SOURCES)
	$(VENV)/bin/ruff check --fix $(SOURCES)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
