# `make demo` and `make test` work on a fresh machine: each sets up .venv first.
# torch==2.13.0 is installed before the package when no torch is present, so a CPU machine takes
# the CPU wheel instead of pulling several GB of CUDA packages.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-slow lint demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml checkpoints/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]' -e ./checkpoints
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q -p no:cacheprovider --durations=10

test-slow: setup
	$(PY) -m pytest -q -p no:cacheprovider -m slow --durations=10

lint: setup
	$(VENV)/bin/ruff check neuralenvs tests examples benchmarks

demo: setup
	$(PY) examples/train_ppo_in_dream.py

clean:
	rm -rf $(VENV) runs/ demo_out/
