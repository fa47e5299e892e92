# `make help` lists the targets. `make test` is what CI runs (.ci/run).
.DEFAULT_GOAL := test
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help setup demo test lint bench clean

help: ## List the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-7s %s\n", $$1, $$2}'

setup: $(STAMP) ## Create .venv and install loops-sync with its test tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup ## Sync sample_data/ into the bundled Loops emulator, twice, and show the result
	$(PY) scripts/demo.py

test: setup ## Lint, then the whole suite (needs the local PostgreSQL and MariaDB)
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest

lint: setup ## ruff and mypy, as configured in pyproject.toml
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: setup ## Benchmarks against the emulator (not part of test)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/run.py

clean: ## Remove .venv, caches and demo state
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info configs/.loops-sync
