# The two commands of the README:
#   make demo   installs what is missing, then runs the main job end to end on the bundled samples
#   make test   installs what is missing, then runs the whole test suite
# `make test-fast` skips the slow tests (a minute or two); `make lint` runs ruff;
# `make bench` runs every benchmark and rewrites docs/benchmarks.md.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# PyTorch goes in first, so that pip does not pick a build for us. torch==2.13.0 is a CUDA build
# on a Linux machine with PyPI; on this project's CPU machines it is the CPU build on their disk.
# Any torch >= 2.3 works: e.g. make TORCH="torch==2.13.0 --index-url <a CPU-only index>".
TORCH  ?= torch==2.13.0

.PHONY: install demo test test-fast lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py iae_privacy/keys/_hmacbatch.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(BIN)/iae-privacy demo

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff check .

# Anonymeter pins numpy < 1.27 and pyarrow < 22: it gets an environment of its own, which the
# synthesis benchmark runs (bench/anonymeter_risks.py)
ANONYMETER := bench/.anonymeter

bench: install $(ANONYMETER)/.installed
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench

$(ANONYMETER)/.installed:
	test -x $(ANONYMETER)/bin/python || $(PYTHON) -m venv $(ANONYMETER)
	$(ANONYMETER)/bin/pip install --quiet anonymeter==1.1.0
	touch $@

clean:
	rm -rf $(VENV) $(ANONYMETER) work .pytest_cache .hypothesis *.egg-info
