"""A labelled text task: texts, a label per text, and the document each text came from.

Train and test are split *by document* (all paragraphs of one reference topic, all chunks of
one source file go to the same side), so a probe cannot score by recognising a document it saw.
The split is a deterministic function of the document names and a seed.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class TaskSplit:
    """Indices into the task's texts."""

    train: list[int]
    test: list[int]


@dataclass
class LabelledTask:
    """Texts with one string label each; ``documents[i]`` names where text i came from."""

    name: str
    texts: list[str]
    labels: list[str]
    documents: list[str]
    description: str = ""
    source: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (len(self.texts) == len(self.labels) == len(self.documents)):
            raise ValueError(f"task {self.name!r}: {len(self.texts)} texts, {len(self.labels)} "
                             f"labels and {len(self.documents)} documents must be as many")

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))

    def balance(self) -> dict[str, int]:
        return dict(sorted(Counter(self.labels).items()))

    def checksum(self) -> str:
        """sha256 of the texts, labels and documents: names the task's data in caches."""
        digest = hashlib.sha256()
        for row in zip(self.texts, self.labels, self.documents):
            digest.update(json.dumps(row).encode())
        return digest.hexdigest()

    def check(self, min_per_class: int = 4) -> None:
        """Refuse tasks no probe can be trained on, saying why."""
        balance = self.balance()
        if len(balance) < 2:
            raise ValueError(f"task {self.name!r} has {len(balance)} class(es) {list(balance)}; "
                             "a probe needs at least two labels")
        small = {k: v for k, v in balance.items() if v < min_per_class}
        if small:
            raise ValueError(f"task {self.name!r}: classes {small} have fewer than "
                             f"{min_per_class} examples; give more examples or drop them")

    def split(self, test_fraction: float = 0.3, seed: int = 0) -> TaskSplit:
        """Documents of each class are shuffled by a seeded hash and the first
        ``test_fraction`` of them (at least one) go to test; both sides keep every class."""
        by_class: dict[str, list[str]] = {}
        for label, doc in zip(self.labels, self.documents):
            docs = by_class.setdefault(label, [])
            if doc not in docs:
                docs.append(doc)
        test_docs: set[tuple[str, str]] = set()
        for label, docs in by_class.items():
            if len(docs) < 2:
                raise ValueError(f"task {self.name!r}: class {label!r} comes from a single "
                                 "document, so train and test cannot be disjoint by document")
            docs = sorted(docs, key=lambda d: hashlib.sha256(f"{seed}:{d}".encode()).hexdigest())
            n_test = min(len(docs) - 1, max(1, round(test_fraction * len(docs))))
            test_docs.update((label, d) for d in docs[:n_test])
        train, test = [], []
        for i, key in enumerate(zip(self.labels, self.documents)):
            (test if key in test_docs else train).append(i)
        return TaskSplit(train, test)

    def subsample(self, max_per_class: int, seed: int = 0) -> LabelledTask:
        """At most `max_per_class` texts per label, picked at random (seeded)."""
        gen = torch.Generator().manual_seed(seed)
        keep: list[int] = []
        for label in self.classes:
            rows = [i for i, y in enumerate(self.labels) if y == label]
            order = torch.randperm(len(rows), generator=gen)[:max_per_class]
            keep.extend(rows[int(j)] for j in order)
        keep.sort()
        return LabelledTask(self.name, [self.texts[i] for i in keep],
                            [self.labels[i] for i in keep], [self.documents[i] for i in keep],
                            self.description, self.source)


def load_labelled_file(path: str | Path, *, text_column: str = "text",
                       label_column: str = "label",
                       document_column: str = "document") -> LabelledTask:
    """A user task from CSV (header row) or JSONL (one object a line). Without a document
    column every row is its own document."""
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    elif path.suffix.lower() == ".csv":
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    else:
        raise ValueError(f"{path}: labelled data must be .csv or .jsonl")
    missing = [c for c in (text_column, label_column) if rows and c not in rows[0]]
    if not rows or missing:
        raise ValueError(f"{path}: needs columns {text_column!r} and {label_column!r} "
                         f"(missing {missing or 'all rows'})")
    return LabelledTask(
        name=path.stem, texts=[str(r[text_column]) for r in rows],
        labels=[str(r[label_column]) for r in rows],
        documents=[str(r.get(document_column, f"row{i}")) for i, r in enumerate(rows)],
        description=f"user file {path.name}", source={"file": str(path.resolve())})
