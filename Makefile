# The two commands a newcomer needs: `make demo` and `make test`. Each creates .venv and
# installs the project from pyproject.toml on first use (and again when pyproject changes).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/limitstream demo

test: $(STAMP)
	$(BIN)/ruff check streams features policies agents tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

lint: $(STAMP)
	$(BIN)/ruff check streams features policies agents tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .limitstream-data .pytest_cache .mypy_cache .ruff_cache
