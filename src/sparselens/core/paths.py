"""Where sparselens keeps what it builds once per machine (dequantised models, compiled
kernels): ``$SPARSELENS_CACHE``, else ``$XDG_CACHE_HOME/sparselens`` (``~/.cache/sparselens``)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "SPARSELENS_CACHE"


def cache_dir() -> Path:
    """The user cache directory (``$SPARSELENS_CACHE`` or ``~/.cache/sparselens``), created."""
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "sparselens")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
