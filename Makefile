# The two commands of the README: `make book` and `make test`.
# Each creates .venv on a fresh machine: `make book` installs skinlib with its `book` extra
# (papermill, Jupyter Book), `make test` with `dev` (the book extra, pytest, ruff, onnx).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
BOOK_STAMP := $(VENV)/.installed-book
DEV_STAMP  := $(VENV)/.installed-dev
# with data here (SKINLIB_DATA_DIR, data/ or ../shared/data/, as skinlib looks), make book trains the smoke
# profile; without it, it renders the most complete committed results bundle (PROFILE=best), training nothing
HAVE_DATA := $(if $(or $(SKINLIB_DATA_DIR),$(wildcard data ../shared/data)),1,)
PROFILE ?= $(if $(HAVE_DATA),smoke,best)
JOBS ?= auto
# the most complete results bundle present (PROFILE=best): the first complete one of paper, gpu, cpu, smoke
BUNDLE_ORDER := paper gpu cpu smoke
BEST_BUNDLE := $(or $(firstword $(foreach p,$(BUNDLE_ORDER),$(if $(shell grep -ls '"complete": true' \
                 results/$(p)/bundle.json),$(p)))),gpu)
override PROFILE := $(if $(filter best,$(PROFILE)),$(BEST_BUNDLE),$(PROFILE))
# smoke trains its runs here; any other profile renders its committed bundle results/$(PROFILE)
FROM_RESULTS ?= $(if $(filter smoke,$(PROFILE)),,1)

.PHONY: help book book-env publish test test-slow test-book lint env clean

# TORCH_INDEX=https://download.pytorch.org/whl/cpu: PyTorch's CPU-only wheels (no CUDA libraries) on a
# machine without an NVIDIA GPU; installed first, so the package's torch requirement is already met
TORCH_INDEX ?=

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install --quiet --index-url $(TORCH_INDEX) torch torchvision)

$(BOOK_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e ".[book]"
	touch $(BOOK_STAMP)

$(DEV_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(DEV_STAMP) $(BOOK_STAMP)

help:  ## list the targets with what each does
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):[^#]*## /  make \1\t/' | expand -t 22

env: $(DEV_STAMP)  ## create or update the virtual environment (everything, for development)

book-env: $(BOOK_STAMP)  ## the virtual environment with the book extra only (what publishing needs)

# PROFILE=smoke (default) trains its runs on this machine; any other profile renders its committed
# results bundle (results/$(PROFILE)) without training, e.g. `make book PROFILE=gpu`.
book: $(BOOK_STAMP)  ## execute every notebook (smoke profile with data; without, the best committed bundle) and build the book
	@$(if $(HAVE_DATA),,echo "make book: no data here, so the book renders the committed bundle results/$(PROFILE) (the most complete one) and trains nothing; with the data (README: Data) it trains the smoke profile")
	$(BIN)/skinlib book --profile $(PROFILE) $(if $(FROM_RESULTS),--from-results,--jobs $(JOBS))

# By hand, what .github/workflows/book.yml does on GitHub: render the most complete committed bundle
# (results/paper, gpu, cpu, then smoke), push the HTML to the gh-pages branch (GitHub Pages serves it).
# Needs the data (skinlib data download) and a remote.
publish: PROFILE = $(BEST_BUNDLE)
publish: FROM_RESULTS = 1
publish: book  ## build the book from the most complete bundle (trains nothing) and push _build/html to gh-pages
	$(BIN)/ghp-import --no-jekyll --push --force --message "book from results/$(PROFILE)" _build/html

test: $(DEV_STAMP)  ## the default test run (slow tests excluded)
	$(BIN)/python -m pytest -x -q --durations=15

test-slow: $(DEV_STAMP)  ## the slow tests (CI runs them in a separate step)
	$(BIN)/python -m pytest -x -q -m slow

test-book: $(DEV_STAMP)  ## read the built book in headless Chromium (builds it when absent)
	$(BIN)/python -m pytest -x -q -m book

lint: $(DEV_STAMP)
	$(BIN)/ruff check skinlib tests benchmarks notebooks

clean:  ## remove build outputs (keeps .venv, runs/ and the image cache)
	rm -rf _build book/executed
