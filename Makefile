# Two entry points for a fresh clone: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint install clean

$(BIN)/vireid: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(BIN)/vireid

install: $(BIN)/vireid

demo: install
	$(BIN)/vireid demo --out runs/demo

test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# ruff (lint and import order) and mypy (types of src/vireid); settings in pyproject.toml, see CONTRIBUTING.md
lint: install
	$(BIN)/ruff check src tests benchmarks configs
	$(BIN)/mypy

clean:
	rm -rf runs .pytest_cache
