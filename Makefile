# Every target works on a fresh machine: the virtual environment is created when missing.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres]'
	# rfa_toolbox, the independent receptive-field reference of tests/test_receptive_rfa.py:
	# 1.7.0 declares Python < 3.10 (it runs with one patched import, see the test).
	$(BIN)/python -m pip install --quiet --ignore-requires-python --no-deps rfa-toolbox==1.7.0 attrs graphviz \
	  || echo "rfa_toolbox could not be installed: tests/test_receptive_rfa.py will skip"
	touch $(STAMP)

install: $(STAMP)

## demo: the main job on the embedded default (built-in model on scikit-learn's digits)
demo: $(STAMP)
	$(BIN)/satadvisor analyze

## test: lint, type-check and the test suite (slow tests excluded; `make test-all` runs them)
# Two pytest workers with one torch thread each: small models are overhead-bound, so this
# beats one process with two threads on a 2-core machine.
PYTEST_WORKERS ?= 2

test: lint
	$(BIN)/python -m pytest -m "not slow" -q -n $(PYTEST_WORKERS)

test-all: lint
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS)

lint: $(STAMP)
	$(BIN)/ruff check satadvisor tests benchmarks examples
	$(BIN)/ruff format --check satadvisor tests benchmarks examples
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format satadvisor tests benchmarks examples
	$(BIN)/ruff check --fix satadvisor tests benchmarks examples

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
