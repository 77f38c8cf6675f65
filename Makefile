# One virtual environment per checkout; stamps record which extras are installed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast test-all lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.serve: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[serve]'
	touch $@

$(VENV)/.all: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[serve,train,dev,batch]'
	touch $@ $(VENV)/.serve

## Set up (serving extras only) and serve the committed models on 0.0.0.0:8000
run: $(VENV)/.serve
	$(BIN)/spine-serve

# The test sets (markers assigned in tests/conftest.py): the unit set is neither end to end (`e2e`: a browser, a PACS,
# a live server on the committed models, Ray, fuzzing) nor `heavy` (TensorFlow, the multi-host Ray cluster, PyPI,
# the longest end-to-end runs: too long or too large for a laptop's `make test`; CI runs them).
UNIT := not e2e and not heavy
PYTEST := $(BIN)/python -m pytest -q
# The unit set on $(WORKERS) processes (pytest-xdist; a module stays on one process, so its fixtures are built once).
# None of its tests uses schemathesis' pytest plugin, which costs ~2 s to load in every process.
WORKERS ?= 2
UNIT_RUN := $(PYTEST) -n $(WORKERS) --dist loadfile -p no:schemathesis -m "$(UNIT)"

## The inner loop: lint, the import contracts (pyproject.toml) and the unit tests
test-fast: $(VENV)/.all
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(UNIT_RUN)

## What a laptop runs: test-fast, then the end-to-end tests that are not heavy, in one process of its own (the
## committed models loaded once, the memory of the unit run given back before it starts)
test: test-fast
	$(PYTEST) -m "e2e and not heavy"

## Everything (CI: .ci/run): test, then the heavy tests in a process of their own
test-all: test
	$(PYTEST) -m "heavy"

lint: $(VENV)/.all
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
