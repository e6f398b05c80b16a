# aigw — the two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= examples/quickstart.yaml

.PHONY: run test lint typecheck unit bench install dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
dev: $(VENV)/.dev-installed

## Set up and start the gateway on the quickstart config (built-in demo model).
run: $(VENV)/.installed
	$(BIN)/aigw serve --config $(CONFIG)

## Install dev dependencies, then lint, type-check and run the whole test suite.
test: $(VENV)/.dev-installed
	$(BIN)/ruff check aigw tests bench
	$(BIN)/ruff format --check aigw tests bench
	$(BIN)/mypy
	$(BIN)/pytest

$(VENV)/.bench-installed: pyproject.toml $(VENV)/.dev-installed
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

## The benchmark (not part of the tests): see bench/README.md.
bench: $(VENV)/.bench-installed
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
