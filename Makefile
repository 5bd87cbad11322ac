# Two commands do everything on a fresh machine:  `make run`  and  `make test`.
# Each installs what it needs first (a virtualenv in .venv, the pinned CPU torch, and for
# the tests Debian's chromium for the browser test).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install install-peers browser run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# Pinned torch first: the CPU build lies on disk; anything looser pulls a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test,embeddings]'
	touch $(STAMP)

install: $(STAMP)

install-peers: $(STAMP)  ## sae-lens, eai-sparsify, dictionary-learning for interop tests and benchmarks
	$(PY) -m pip install --quiet torch==2.13.0 -e '.[peers]'

browser:  ## Debian chromium for the report's browser test (needs root or sudo)
	@command -v chromium >/dev/null 2>&1 || bash scripts/install-chromium.sh

run: $(STAMP)
	$(VENV)/bin/sparselens run

test: $(STAMP) browser
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/harvest.py

clean:
	rm -rf $(VENV) build *.egg-info
