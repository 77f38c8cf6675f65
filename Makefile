# One virtual environment per checkout; stamps record which extras are installed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast lint bench clean

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

# The tests that are neither end to end (browser, PACS, Ray, the committed models served live: tests/conftest.py) nor slow.
FAST := not e2e and not slow

## Set up everything (serve, train, dev) and run lint, the import contracts (pyproject.toml) + the whole test suite:
## the fast tests, the end-to-end ones, then the slow ones (TensorFlow), each set in its own process so the
## memory of one is given back before the next starts
test: $(VENV)/.all
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "$(FAST)"
	$(BIN)/python -m pytest -q -m "e2e and not slow"
	$(BIN)/python -m pytest -q -m "slow"

## The inner loop: lint, the import contracts and the fast tests only
test-fast: $(VENV)/.all
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "$(FAST)"

lint: $(VENV)/.all
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
