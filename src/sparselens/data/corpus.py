"""Where documents come from: one config, one iterator of texts, one description for manifests.

``iter_texts(cfg)`` checks the configuration (path exists, fields present as far as can be
seen without reading everything) before returning, then streams documents one at a time.
Empty and whitespace-only documents are skipped everywhere, so ``max_documents`` counts real
documents.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import platform
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from sparselens.data import builtin_corpus, readers
from sparselens.data.generated import GenerationConfig, iter_generated, read_state

Source = Literal["builtin", "text", "jsonl", "parquet", "hf_disk", "generated"]
SOURCES: tuple[str, ...] = Source.__args__  # type: ignore[attr-defined]
T = TypeVar("T")


@dataclass
class CorpusConfig:
    """Which documents to read and in which order."""

    source: Source = "builtin"
    """builtin (Python's own docs, stdlib source and package READMEs; no download), text (folder
    of .txt/.md files), jsonl, parquet, hf_disk (a Hugging Face dataset saved with
    save_to_disk) or generated (text the model sampled itself, see generate_corpus)."""
    path: str | None = None
    """File or folder to read; for generated, the folder the samples are cached in. Unused for
    builtin."""
    field: str = "text"
    """JSONL key, Parquet column or dataset column that holds the document text."""
    split: str = "train"
    """Split to read when an hf_disk folder holds a DatasetDict (several splits)."""
    seed: int = 0
    """Seed of the document-order shuffle and of generated text."""
    shuffle: bool = True
    """Shuffle document order with the seed. Applies to builtin and text, whose documents can
    be listed without reading them; jsonl, parquet, hf_disk and generated keep stored order."""
    max_documents: int | None = None
    """Stop after this many non-empty documents; unset reads them all."""
    builtin_parts: tuple[str, ...] = builtin_corpus.DEFAULT_PARTS
    """Parts of the builtin corpus: reference, source, packages, docstrings (docstrings repeat
    text that source already holds, so they are opt-in)."""
    generation: GenerationConfig = dataclasses.field(default_factory=GenerationConfig)
    """How the model samples text for the generated source."""

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"unknown corpus source {self.source!r}; choose from {SOURCES}")
        if self.source != "builtin" and not self.path:
            raise ValueError(f"corpus source {self.source!r} needs a path (--corpus.path)")
        if self.max_documents is not None and self.max_documents < 1:
            raise ValueError(f"max_documents must be >= 1 or unset, got {self.max_documents}")
        unknown = set(self.builtin_parts) - set(builtin_corpus.PARTS)
        if unknown or not self.builtin_parts:
            raise ValueError(f"unknown builtin_parts {sorted(unknown) or '(none)'}; choose "
                             f"from {builtin_corpus.PARTS}")


def _ordered(items: Sequence[T], cfg: CorpusConfig) -> list[T]:
    items = list(items)
    if cfg.shuffle:
        random.Random(cfg.seed).shuffle(items)
    return items


def _builtin(cfg: CorpusConfig) -> Iterator[str]:
    refs = builtin_corpus.document_refs(cfg.builtin_parts)
    return builtin_corpus.iter_documents(_ordered(refs, cfg))


def _text(cfg: CorpusConfig) -> Iterator[str]:
    files = readers.files_with_suffix(cfg.path, readers.TEXT_SUFFIXES, "text corpus")
    return map(readers.read_text_file, _ordered(files, cfg))


_READERS: dict[str, Callable[[CorpusConfig], Iterator[str]]] = {
    "builtin": _builtin,
    "text": _text,
    "jsonl": lambda cfg: readers.iter_jsonl(cfg.path, cfg.field),
    "parquet": lambda cfg: readers.iter_parquet(cfg.path, cfg.field),
    "hf_disk": lambda cfg: readers.iter_hf_disk(cfg.path, cfg.field, cfg.split),
    "generated": lambda cfg: iter_generated(cfg.path, cfg.max_documents),
}


def iter_texts(cfg: CorpusConfig) -> Iterator[str]:
    """The corpus documents, streamed; deterministic for a given config and installation."""
    texts = (text for text in _READERS[cfg.source](cfg) if text.strip())
    return itertools.islice(texts, cfg.max_documents)


def _files_fingerprint(files: list[Path]) -> str:
    """Names and sizes, not contents: cheap for corpora of any size, and it still catches the
    usual accident of a changed or swapped file."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}\t{file.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def _source_details(cfg: CorpusConfig) -> dict[str, Any]:
    if cfg.source == "builtin":
        refs = builtin_corpus.document_refs(cfg.builtin_parts)
        return {"python": platform.python_version(), "n_documents_listed": len(refs),
                "fingerprint": builtin_corpus.fingerprint(refs)}
    if cfg.source == "generated":
        state = read_state(cfg.path)
        return {"generation": state["settings"], "documents_done": state["documents_done"]}
    if cfg.source == "hf_disk":
        files = readers.hf_arrow_files(cfg.path, cfg.split)
    else:
        suffixes = {"text": readers.TEXT_SUFFIXES, "jsonl": (".jsonl",),
                    "parquet": (".parquet",)}[cfg.source]
        files = readers.files_with_suffix(cfg.path, suffixes, f"{cfg.source} corpus")
    return {"n_files": len(files), "fingerprint": _files_fingerprint(files)}


def describe(cfg: CorpusConfig) -> dict[str, Any]:
    """A JSON-able record of the corpus for manifests: the config plus what was found on disk."""
    record = dataclasses.asdict(cfg)
    record["builtin_parts"] = list(cfg.builtin_parts)
    if cfg.path is not None:
        record["path"] = str(Path(cfg.path).expanduser().resolve())
    if cfg.source != "generated":
        del record["generation"]
    return record | _source_details(cfg)
