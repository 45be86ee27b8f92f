# Quick start: `make demo` and `make test`. Both create .venv when it is missing and install torch (pinned first,
# a CPU build) and the package with its `dev` (tests) and `demo` (scikit-learn: the demo's digits) extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: venv demo test lint bench gallery clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -e ".[dev,demo]"
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/crumpets-lightning demo

test: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: venv
	$(BIN)/ruff check crumpets_lightning tests examples benchmarks
	$(BIN)/ruff format --check crumpets_lightning tests examples benchmarks
	$(BIN)/mypy

bench: venv
	$(BIN)/crumpets-lightning bench

clean:
	rm -rf $(VENV) build *.egg-info demo_output
