# The two commands a newcomer needs: `make demo` and `make test`. Each creates .venv and
# installs the project from pyproject.toml on first use (and again when pyproject changes).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean promtool soak

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/limitstream demo

# The suite runs its test files in TEST_PROCESSES processes (pytest-xdist; a file's tests stay
# together, so a module's fixture runs once; each process starts its own embedded broker).
# Most of an end-to-end test is waiting for a group to rebalance or a phase to be committed:
# on a fresh clone, 2 cores, nothing else running, the whole target took 465 s wall for 567
# CPU-seconds (user + system) this way, where the serial run of the session before took 917 s.
TEST_PROCESSES ?= 2

test: $(STAMP) promtool
	$(BIN)/ruff check streams features policies agents lab limitstream tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.run_all

# The exactly-once chaos soak (issue 20; tests/e2e/soak.py): SOAK_RUNS runs (30) of the
# multi-worker chaos scenario with fresh timings, alternating SOAK_STORES (memory,rocksdb);
# prints each run's figures and the pass count. Not part of `make test`: 157-180 s a run here.
soak: $(STAMP)
	$(BIN)/python -m tests.e2e.soak

lint: $(STAMP)
	$(BIN)/ruff check streams features policies agents lab limitstream tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .limitstream-data .pytest_cache .mypy_cache .ruff_cache

# promtool (the alert-rule tests) comes with Debian's `prometheus` package; the real-scrape
# tests also run its `prometheus` server, and tests/e2e/test_alertmanager.py the Alertmanager
# of Debian's `prometheus-alertmanager` (binary `prometheus-alertmanager`). Each installed
# once, when missing. On a machine with systemd the packages also start their services on
# :9090 and :9093 (`systemctl disable --now prometheus prometheus-alertmanager`).
promtool:
	@missing=""; \
	command -v promtool >/dev/null 2>&1 || missing="prometheus"; \
	command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1 \
	  || missing="$$missing prometheus-alertmanager"; \
	[ -z "$$missing" ] || { \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; }
