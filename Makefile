# The two commands a newcomer needs: `make demo` and `make test`. Each creates .venv and
# installs the project from pyproject.toml on first use (and again when pyproject changes).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean promtool

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/limitstream demo

test: $(STAMP) promtool
	$(BIN)/ruff check streams features policies agents lab limitstream tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.run_all

lint: $(STAMP)
	$(BIN)/ruff check streams features policies agents lab limitstream tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .limitstream-data .pytest_cache .mypy_cache .ruff_cache

# promtool (the alert-rule tests) comes with Debian's `prometheus` package; the real-scrape
# test also runs its `prometheus` server. Installed once, when missing. On a machine with
# systemd the package also starts a Prometheus on :9090 (`systemctl disable --now prometheus`).
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }
