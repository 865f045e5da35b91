# device-activity: see SPEC §6. Only `make test` has to work on a fresh machine by itself:
# it builds the venv, and its fixtures provision Redis (apt-get) and Kafka (Maven) when missing.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY = $(VENV)/bin/python
# pyproject.toml asks for 3.11 or 3.12; prefer those over whatever `python3` is.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || echo python3)
RUN_DIR ?= $(or $(DEVACT_RUN_DIR),.run)
export DEVACT_RUN_DIR := $(abspath $(RUN_DIR))
export VENV

STAMP = $(VENV)/.installed
# devact.services is stdlib only: stopping must work even without the venv.
SERVICES = $(if $(wildcard $(PY)),$(PY),$(PYTHON)) -m devact.services
SOURCES = stream api state devact tests bench

.PHONY: help install services services-down run stop test bench lint fmt clean

help:
	@echo "make install | test | run | stop | services | services-down | lint | fmt | bench | clean"

install: $(STAMP)

$(STAMP): pyproject.toml
	@# Debian's python3 lacks ensurepip until python3-venv is installed.
	$(PYTHON) -m venv $(VENV) || { apt-get update && apt-get install -y python3-venv \
		&& $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

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
	docker compose config -q && echo "docker-compose.yml: valid"
	@# The session fixture of tests/conftest.py starts Kafka and Redis on free ports and stops them.
	$(PY) -m pytest

BENCH_STAMP = $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $@

# Starts its own Kafka, Redis and PostgreSQL (installing PostgreSQL and wrk from Debian when
# missing) and writes bench/results/. QUICK=1: smaller data, under 3 minutes.
bench: $(BENCH_STAMP)
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
