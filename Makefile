# Two commands do all set-up on a fresh machine (Python >= 3.11, make, git, gcc):
#   make run   - install into .venv, then `elpis up`: the embedded stack works the sample batch
#   make test  - install into .venv, then the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.elpis-installed

.PHONY: install run test lint format bench bench-all clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "Installing Elpis into $(VENV). On a fresh machine llama-cpp-python compiles from source (~6 min on 2 cores); pip caches the wheel afterwards."
	@$(BIN)/python scripts/pip_progress.py -e ".[test]"
	@touch $@

install: $(STAMP)

run: install
	@bash scripts/ensure_bwrap.sh
	$(BIN)/elpis up

test: install
	@bash scripts/ensure_bwrap.sh
	@bash scripts/ensure_chromium.sh
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Benchmarks (not tests): docs/benchmarks.md and docs/memory.md hold the last run.
# `make bench`: one table for the default model, every figure a ratio of a baseline measured in the same
# run (bench/bench_summary.py: docs/bench-summary.json and docs/bench-turn-time.png; under 15 min on 2 cores).
bench: install
	@bash scripts/ensure_bwrap.sh
	$(BIN)/python bench/bench_summary.py

# `make bench-all`: the summary, then the older benches, each measuring one thing in more depth (hours).
bench-all: bench
	$(BIN)/python bench/bench_grammar.py
	$(BIN)/python bench/bench_pipeline.py
	$(BIN)/python bench/bench_threads.py
	$(BIN)/python bench/bench_batch.py
	$(BIN)/python bench/ablation.py
	$(BIN)/python bench/bench_memory.py

clean:
	rm -rf $(VENV) var .pytest_cache
