# Everything runs from a local virtual environment that this Makefile creates.
# torch is pinned to the CPU build (2.13.0) on this install path; pyproject.toml keeps the range open.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install swarm test test-slow lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check .

swarm: $(STAMP)
	$(BIN)/tesseract swarm --local

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_net.py
	$(BIN)/python benchmarks/bench_dht.py --real --nodes 16
	$(BIN)/python benchmarks/bench_throughput.py
	$(BIN)/python benchmarks/bench_moe.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
