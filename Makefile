# Audit-log data lake. `make demo` and `make test` work on a fresh machine with Python 3.11+.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
# Recipes run in this folder and name the venv by its relative path: the folder's own path may hold
# spaces, which make would split. Exported variables are values, never split.
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export PYTHONPATH := $(CURDIR)
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export GX_ANALYTICS_ENABLED := false
export AUDIT_RAW_ROOT ?= $(CURDIR)/data/raw
export AUDIT_LAKE_ROOT ?= $(CURDIR)/data/lake
export AUDIT_EXPORT_ROOT ?= $(CURDIR)/data/exports

.PHONY: help install system-packages demo test test-fast lint format airflow bench clean stack stack-down

help:
	@echo "make demo     set up .venv, generate a week of events, run ingest, daily exports and retention through Airflow"
	@echo "make test     run the whole test suite (as root it first installs the Debian packages it needs)"
	@echo "make test-fast  the inner loop: the tests that need no stack, no browser and no S3 server"
	@echo "make lint     ruff check and ruff format --check (settings in pyproject.toml)"
	@echo "make format   ruff format and ruff check --fix"
	@echo "make airflow  the Airflow UI on these DAGs at http://127.0.0.1:8080 (what airflow standalone runs); Ctrl-C stops it"
	@echo "make bench    benchmark against DuckDB (see README, Performance)"
	@echo "make stack    run the docker-compose topology here without Docker (PostgreSQL, Redis, SeaweedFS, Celery); make stack-down stops it"

$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip check
	touch $@

# Bytecode ahead of time, as pip does for installed packages: with PYTHONDONTWRITEBYTECODE set, every
# CLI process would otherwise compile the project's modules again (~45 ms of a 0.5 s export).
install: $(VENV)/.installed
	$(BIN)/python -m compileall -q include dags plugins

demo: install
	$(BIN)/python scripts/demo.py

# Debian packages for the browser and stack tests (chromium, postgresql, redis-server...), installed
# quietly when missing and we are root; otherwise it stops with the exact command to run.
system-packages:
	@scripts/system-packages.sh

test: install system-packages
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow and not stack and not browser and not s3" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# What `airflow standalone` runs, on loopback only, parallelism = cores; Ctrl-C stops every process.
airflow: install
	$(BIN)/python scripts/airflow_local.py --port $(or $(AIRFLOW_PORT),8080)

bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

stack: install
	$(BIN)/python scripts/stack.py up $(STACK_ARGS)

stack-down:
	$(BIN)/python scripts/stack.py down $(STACK_ARGS)

clean:
	rm -rf data .airflow
