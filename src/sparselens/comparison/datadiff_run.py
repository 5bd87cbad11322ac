"""The `datadiff` pipeline: two corpora through one dictionary, what differs between them, the
document clusters, and the documents each differing latent retrieves; JSON and a static page."""

from __future__ import annotations

import functools
import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse import vstack

from sparselens.comparison.datadiff import (
    Clustering,
    CorpusDiff,
    DocumentEmbeddings,
    cluster_documents,
    diff_corpora,
    retrieve,
)
from sparselens.comparison.page import table, write_page
from sparselens.interpretation.report import json_safe
from sparselens.io.atomic import atomic_write_json

SNIPPET = 160


@dataclass
class DatadiffOptions:
    """How documents are embedded and tested."""

    alpha: float = 0.05
    """False discovery rate for the Benjamini-Hochberg correction."""
    pool: str = "max"
    """How a document's token codes become its embedding: max, mean or sum."""
    max_tokens: int = 256
    """Tokens read per document (a longer document is represented by its start)."""
    batch_size: int = 8
    """Documents per forward pass."""
    n_clusters: int = 8
    """k-means clusters over both corpora's documents (0 skips clustering)."""
    top: int = 20
    """Latents listed per direction on the page (all significant ones are in the JSON)."""
    n_documents_shown: int = 3
    """Documents retrieved and shown per listed latent."""

    def __post_init__(self) -> None:
        if self.pool not in ("max", "mean", "sum"):
            raise ValueError(f"pool must be max, mean or sum, got {self.pool!r}")
        if self.n_clusters < 0 or self.top < 1 or self.n_documents_shown < 0:
            raise ValueError("n_clusters and n_documents_shown must be >= 0, top >= 1")


@dataclass
class DatadiffResult:
    diff: CorpusDiff
    embeddings: tuple[DocumentEmbeddings, DocumentEmbeddings]
    clustering: Clustering | None
    explanations: dict[int, str] = field(default_factory=dict)
    labels: tuple[str, str] = ("A", "B")

    @functools.cached_property
    def both(self) -> DocumentEmbeddings:
        """Both corpora's documents, A's first."""
        a, b = self.embeddings
        return DocumentEmbeddings(vstack([a.matrix, b.matrix]).tocsr(),
                                  np.concatenate([a.n_tokens, b.n_tokens]), a.texts + b.texts)

    def corpus_of(self, doc: int) -> str:
        return self.labels[0] if doc < self.embeddings[0].n_docs else self.labels[1]

    def retrieved(self, latent: int, n: int) -> list[dict[str, Any]]:
        docs = self.both
        return [{"corpus": self.corpus_of(i), "document": i, "activation": value,
                 "text": docs.texts[i][:SNIPPET] if docs.texts else ""}
                for i, value in retrieve(docs, latent, n)]

    def record(self, top: int = 50, shown: int = 3) -> dict[str, Any]:
        summary = self.diff.summary(top)
        for key in ("more_in_a", "more_in_b"):
            for entry in summary[key]:
                entry["documents"] = self.retrieved(entry["latent"], shown)
        clusters = None
        if self.clustering is not None:
            clusters = self.clustering.summary(self.explanations)
            n_a = self.embeddings[0].n_docs
            for entry in clusters:
                members = np.flatnonzero(self.clustering.labels == entry["cluster"])
                entry["docs_a"] = int((members < n_a).sum())
                entry["docs_b"] = int((members >= n_a).sum())
        return {"schema": "sparselens.datadiff", "schema_version": 1,
                "corpora": {"A": self.labels[0], "B": self.labels[1]}, **summary,
                "clusters": clusters}


def run_datadiff(lens: Any, name: str, texts_a: list[str], texts_b: list[str],
                 options: DatadiffOptions | None = None,
                 explanations: dict[int, str] | None = None, labels: tuple[str, str] = ("A", "B"),
                 progress: bool = False) -> DatadiffResult:
    """Embed both corpora with dictionary `name` of `lens`, test every latent, cluster."""
    from sparselens.comparison.corpus_codes import embed_texts

    options = options or DatadiffOptions()
    embeddings = tuple(embed_texts(lens, name, texts, options.max_tokens, options.batch_size,
                                   options.pool, progress, f"encoding {label}")
                       for texts, label in ((texts_a, labels[0]), (texts_b, labels[1])))
    emb_a, emb_b = embeddings
    diff = diff_corpora(emb_a, emb_b, options.alpha, explanations)
    result = DatadiffResult(diff, (emb_a, emb_b), None, explanations or {}, labels)
    if options.n_clusters:
        result.clustering = cluster_documents(result.both,
                                              min(options.n_clusters, emb_a.n_docs + emb_b.n_docs))
    return result


def _latent_rows(record: dict[str, Any], key: str) -> str:
    if not record[key]:
        return "<p>None significant.</p>"
    rows = [{"latent": e["latent"], "explanation": e["explanation"], "docs A": e["docs_a"],
             "docs B": e["docs_b"], "freq A": e["freq_a"], "freq B": e["freq_b"],
             "log2 odds": e["log2_odds"], "q": e["q_value"],
             "top document": (f"[{e['documents'][0]['corpus']}] {e['documents'][0]['text']}"
                              if e["documents"] else None)} for e in record[key]]
    return table(rows, list(rows[0]))


def write_datadiff(result: DatadiffResult, out: str | os.PathLike,
                   options: DatadiffOptions | None = None) -> Path:
    """``out/datadiff.json`` and ``out/index.html``; returns the page's path."""
    options = options or DatadiffOptions()
    out = Path(out)
    record = result.record(options.top, options.n_documents_shown)
    atomic_write_json(out / "datadiff.json", json_safe(record))
    a, b = result.labels
    head = table([{"corpus": "A", "source": a, "documents": record["n_docs_a"],
                   "significant latents": record["n_significant_a"]},
                  {"corpus": "B", "source": b, "documents": record["n_docs_b"],
                   "significant latents": record["n_significant_b"]}],
                 ["corpus", "source", "documents", "significant latents"])
    method = (f"<p>{html.escape(record['test'])} at false discovery rate {record['alpha']}; "
              f"{record['n_tested']} latents fired in some document and were tested. A latent "
              "fires in a document when its pooled activation there is non-zero.</p>")
    sections = [("Corpora", head + method),
                (f"More frequent in A ({a})", _latent_rows(record, "more_in_a")),
                (f"More frequent in B ({b})", _latent_rows(record, "more_in_b"))]
    if record["clusters"]:
        rows = [{"cluster": c["cluster"], "docs A": c["docs_a"], "docs B": c["docs_b"],
                 "top latents": ", ".join(f"{t['latent']}" + (f" ({t['explanation']})"
                                                              if t["explanation"] else "")
                                          for t in c["top_latents"])}
                for c in record["clusters"]]
        sections.append(("Document clusters (k-means on which latents fire)",
                         table(rows, list(rows[0]))))
    return write_page(out / "index.html", f"Dataset diff: {a} vs {b}", sections)


def read_corpus(spec: str, field_name: str = "text", max_documents: int | None = None
                ) -> list[str]:
    """Documents from a folder of .txt/.md files, a .jsonl or .parquet file, or ``builtin``."""
    from sparselens.data.corpus import CorpusConfig, iter_texts

    path = Path(spec).expanduser()
    if spec == "builtin":
        cfg = CorpusConfig(max_documents=max_documents)
    elif path.is_dir():
        cfg = CorpusConfig(source="text", path=str(path), max_documents=max_documents)
    elif path.suffix in (".jsonl", ".parquet") and path.is_file():
        cfg = CorpusConfig(source=path.suffix[1:], path=str(path), field=field_name,  # type: ignore[arg-type]
                           max_documents=max_documents)
    else:
        raise FileNotFoundError(f"corpus {spec!r} is neither a folder of text files, a .jsonl or "
                                ".parquet file, nor 'builtin'")
    return list(iter_texts(cfg))
