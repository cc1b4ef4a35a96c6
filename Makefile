# The two commands of the README: `make book` and `make test`.
# Each creates .venv on a fresh machine (python3 -m venv + pip install -e .[dev]).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROFILE ?= smoke

.PHONY: book test test-book lint env clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

env: $(STAMP)  ## create or update the virtual environment

book: $(STAMP)  ## execute every notebook with the smoke profile and build the HTML book
	$(BIN)/skinlib book --profile $(PROFILE)

test: $(STAMP)  ## the default test run (slow tests excluded)
	$(BIN)/python -m pytest -x -q

test-book: $(STAMP)  ## read the built book in headless Chromium (builds it when absent)
	$(BIN)/python -m pytest -x -q -m book

lint: $(STAMP)
	$(BIN)/ruff check skinlib tests benchmarks

clean:  ## remove build outputs (keeps .venv, runs/ and the image cache)
	rm -rf _build book/executed
