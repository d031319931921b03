# Two commands matter: `make dev` and `make test`. Everything else is a building block.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test lint format bench venv clean

venv: $(STAMP)

# Reinstall only when the dependency list changes.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,otel]'
	@touch $(STAMP)

dev: $(STAMP)
	$(BIN)/bff dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/pytest

# Both benchmarks run even if one fails (the client one needs nginx); either failing fails the target.
bench: $(STAMP)
	status=0; \
	$(BIN)/python bench/upstream_client_bench.py || status=1; \
	$(BIN)/python bench/bff_bench.py || status=1; \
	exit $$status

clean:
	rm -rf $(VENV) .data .mypy_cache .pytest_cache .ruff_cache
