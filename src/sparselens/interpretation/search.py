"""Search latents by meaning: every explanation embedded once (all-MiniLM-L6-v2), stored
beside the explanations, and ranked by cosine similarity to a query ("dates", "closing
brackets in code")."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sparselens.interpretation.embedder import embed
from sparselens.io.atomic import atomic_write_bytes

INDEX_FILE = "explanations.embeddings.safetensors"


@dataclass
class Hit:
    latent: int
    explanation: str
    similarity: float


@dataclass
class ExplanationIndex:
    latents: list[int]
    explanations: list[str]
    vectors: np.ndarray
    """``(n, 384)`` unit-norm float32."""

    @classmethod
    def build(cls, explanations: dict[int, str]) -> ExplanationIndex:
        latents = sorted(explanations)
        texts = [explanations[j] for j in latents]
        vectors = embed(texts) if texts else np.zeros((0, 384), dtype=np.float32)
        return cls(latents, texts, vectors)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        if not self.latents:
            return []
        similarity = self.vectors @ embed([query])[0]
        best = np.argsort(-similarity, kind="stable")[:k]
        return [Hit(self.latents[i], self.explanations[i], float(similarity[i])) for i in best]

    def save(self, folder: str | os.PathLike) -> Path:
        from safetensors.torch import save

        path = Path(folder) / INDEX_FILE
        tensors = {"vectors": torch.from_numpy(np.ascontiguousarray(self.vectors)),
                   "latents": torch.tensor(self.latents, dtype=torch.long)}
        atomic_write_bytes(path, save(tensors, metadata={
            "explanations": json.dumps(self.explanations), "model": "all-MiniLM-L6-v2"}))
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> ExplanationIndex:
        from safetensors import safe_open

        path = Path(folder) / INDEX_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; run `sparselens explain` first")
        with safe_open(str(path), framework="pt") as handle:
            texts = json.loads(handle.metadata()["explanations"])
            return cls(handle.get_tensor("latents").tolist(), texts,
                       handle.get_tensor("vectors").numpy())
