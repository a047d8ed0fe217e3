# Every target works on a fresh machine: the virtual environment is created when missing.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all test-min lint format bench clean

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

## test-min: the fast tests against the minimum versions pyproject.toml declares
# A separate environment ($(MIN_VENV)) with every runtime dependency pinned to its floor
# (tools/min_requirements.py reads them from pyproject.toml, so the pins cannot drift) and
# the test runner and the postgres extra (the storage tests use its driver) at their own
# floors; the other extras (lightning, tensorboard, timm, …) are left out and their tests
# skip. torch comes from PyPI with its CUDA libraries (~3 GB; 2 min 21 s to install here).
MIN_VENV ?= .venv-min
MIN_BIN := $(MIN_VENV)/bin
MIN_STAMP := $(MIN_VENV)/.installed
MIN_TEST_TOOLS := pytest,pytest-timeout,pytest-xdist,hypothesis

$(MIN_STAMP): pyproject.toml tools/min_requirements.py
	test -x $(MIN_BIN)/python || $(PY) -m venv $(MIN_VENV)
	$(MIN_BIN)/python -m pip install --quiet --upgrade pip
	$(MIN_BIN)/python tools/min_requirements.py > $(MIN_VENV)/requirements-min.txt
	$(MIN_BIN)/python tools/min_requirements.py --extra dev --only $(MIN_TEST_TOOLS) >> $(MIN_VENV)/requirements-min.txt
	$(MIN_BIN)/python tools/min_requirements.py --extra postgres >> $(MIN_VENV)/requirements-min.txt
	$(MIN_BIN)/python -m pip install --quiet -r $(MIN_VENV)/requirements-min.txt
	$(MIN_BIN)/python -m pip install --quiet --no-deps -e .
	$(MIN_BIN)/python -m pip check
	touch $(MIN_STAMP)

test-min: $(MIN_STAMP)
	$(MIN_BIN)/python -m pip freeze --exclude-editable | grep -iE '^(torch|torchvision|optuna|numpy|scipy|scikit-learn|click|jinja2|plotly|tqdm)=='
	$(MIN_BIN)/python -m pytest -m "not slow" -q -n $(PYTEST_WORKERS) -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check satadvisor tests benchmarks examples tools
	$(BIN)/ruff format --check satadvisor tests benchmarks examples tools
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format satadvisor tests benchmarks examples tools
	$(BIN)/ruff check --fix satadvisor tests benchmarks examples tools

clean:
	rm -rf $(VENV) $(MIN_VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
