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
	$(PY) -m pip install --quiet -e '.[test,embeddings,explain]'
	touch $(STAMP)

install: $(STAMP)

PEERS := $(VENV)/.peers-installed

# sae-lens, eai-sparsify and dictionary-learning, for the interop tests and the speed benchmark.
# dictionary-learning pins nnsight, which asks for an unpinned torchvision (a CUDA build that
# breaks `import transformers` here); nothing needs torchvision, so those two come without deps.
$(PEERS): $(STAMP)
	$(PY) -m pip install --quiet torch==2.13.0 -e '.[peers]'
	$(PY) -m pip install --quiet --no-deps dictionary-learning==0.1.0 nnsight==0.3.7
	$(PY) -m pip install --quiet torch==2.13.0 circuitsvis datasets einops llvmlite pandas plotly \
		umap-learn wandb zstandard 'python-socketio[client]' sentencepiece diffusers protobuf
	touch $(PEERS)

install-peers: $(PEERS)

browser:  ## Debian chromium for the report's browser test (needs root or sudo)
	@command -v chromium >/dev/null 2>&1 || bash scripts/install-chromium.sh

run: $(STAMP)
	$(VENV)/bin/sparselens run

test: $(STAMP) $(PEERS) browser
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/harvest.py

clean:
	rm -rf $(VENV) build *.egg-info
