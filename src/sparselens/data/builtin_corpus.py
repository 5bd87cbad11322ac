"""The built-in corpus: text that is already on disk wherever Python runs, so nothing is downloaded.

Four parts, each a list of small document references (never the texts themselves), so that a
seed can shuffle the whole corpus while texts are still read one at a time:

- ``reference``: the language reference topics that ``help()`` shows (``pydoc_data.topics``).
- ``source``: every standard-library ``.py`` file, verbatim (code, comments and docstrings).
- ``packages``: the long descriptions (usually the README) of installed distributions.
- ``docstrings``: standard-library docstrings extracted with ``ast`` as prose. Opt-in, because
  the same docstrings are already inside ``source``.

``reference`` and ``source`` depend only on the Python version; ``packages`` depends on what is
installed, so the corpus is reproducible given the same Python installation (see
docs/corpus.md). Files are walked as text; no module except ``pydoc_data.topics`` is imported.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import re
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PARTS = ("reference", "source", "packages", "docstrings")
DEFAULT_PARTS = ("reference", "source", "packages")

# Test suites are repetitive assertion code full of deliberately malformed data, site-packages
# is not the standard library, and the rest are build artefacts rather than text.
_SKIPPED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
                 "lib-dynload"}
# Machine-specific build flags: differ between installs of the same Python version.
_SKIPPED_FILE = re.compile(r"_sysconfigdata_.*\.py$")


@dataclass(frozen=True, order=True)
class DocRef:
    """Where one built-in document comes from: a part name and a key inside that part."""

    part: str
    key: str
    """A topic name (reference), a path relative to the stdlib (source, docstrings), or a
    distribution name (packages)."""


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_files() -> list[str]:
    root = stdlib_dir()
    files = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if _SKIPPED_DIRS.isdisjoint(rel.parts[:-1]) and not rel.parts[0].startswith("config-") \
                and not _SKIPPED_FILE.match(rel.name):
            files.append(rel.as_posix())
    return sorted(files)


@functools.cache
def _distributions() -> dict[str, importlib.metadata.Distribution]:
    """Installed distributions by normalised name; the first on sys.path wins, as for import."""
    found: dict[str, importlib.metadata.Distribution] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata.get("Name")
        if name:
            found.setdefault(re.sub(r"[-_.]+", "-", name).lower(), dist)
    return found


def _reference_topics() -> dict[str, str]:
    from pydoc_data.topics import topics

    return topics


def document_refs(parts: Iterable[str] = DEFAULT_PARTS) -> list[DocRef]:
    """All documents of the chosen parts in a fixed, sorted order."""
    parts = tuple(parts)
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise ValueError(f"unknown built-in corpus parts {unknown or parts}; choose from {PARTS}")
    refs: list[DocRef] = []
    for part in PARTS:
        if part not in parts:
            continue
        if part == "reference":
            keys = sorted(_reference_topics())
        elif part == "packages":
            keys = sorted(_distributions())
        else:
            keys = _stdlib_files()
        refs.extend(DocRef(part, key) for key in keys)
    return refs


def load_document(ref: DocRef) -> str:
    """The text of one document ('' when it has none, e.g. a package without a description)."""
    if ref.part == "reference":
        return _reference_topics()[ref.key]
    if ref.part == "packages":
        meta = _distributions()[ref.key].metadata
        body = (meta.get("Description") or "").strip()
        if not body:
            return ""
        head = f"{meta.get('Name')} {meta.get('Version')}: {meta.get('Summary') or ''}".strip()
        return f"{head}\n\n{body}"
    text = (stdlib_dir() / ref.key).read_text(encoding="utf-8", errors="replace")
    return text if ref.part == "source" else extract_docstrings(text, module=_module_name(ref.key))


def iter_documents(refs: Iterable[DocRef]) -> Iterator[str]:
    """Load documents one at a time, in the given order."""
    for ref in refs:
        yield load_document(ref)


def fingerprint(refs: list[DocRef]) -> str:
    """A short hash of the document list (and file sizes), to tell two corpora apart cheaply."""
    digest = hashlib.sha256()
    root = stdlib_dir()
    for ref in refs:
        size = (root / ref.key).stat().st_size if ref.part in ("source", "docstrings") else ""
        version = _distributions()[ref.key].version if ref.part == "packages" else ""
        digest.update(f"{ref.part}\t{ref.key}\t{size}\t{version}\n".encode())
    return digest.hexdigest()[:16]


def _module_name(rel_path: str) -> str:
    name = rel_path.removesuffix(".py").replace("/", ".")
    return name.removesuffix(".__init__")


def extract_docstrings(source: str, module: str) -> str:
    """The module's docstrings as prose, each headed by the qualified name it documents."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ""
    sections = []
    pending: list[tuple[str, ast.AST]] = [(module, tree)]
    while pending:
        name, node = pending.pop(0)
        doc = ast.get_docstring(node, clean=True)  # type: ignore[arg-type]
        if doc:
            sections.append(f"{name}\n\n{doc}")
        children = [c for c in ast.iter_child_nodes(node)
                    if isinstance(c, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]
        pending[:0] = [(f"{name}.{c.name}", c) for c in children]
    return "\n\n\n".join(sections)


def measure(tokenizer: Any, parts: Iterable[str] = PARTS) -> dict[str, dict[str, int]]:
    """Non-empty documents, characters and tokens per part, for docs/corpus.md."""
    sizes = {}
    for part in parts:
        row = {"documents": 0, "characters": 0, "tokens": 0}
        for text in iter_documents(document_refs([part])):
            if text.strip():
                ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True,
                                verbose=False)["input_ids"]
                row["documents"] += 1
                row["characters"] += len(text)
                row["tokens"] += len(ids)
        sizes[part] = row
    return sizes


if __name__ == "__main__":  # python -m sparselens.data.builtin_corpus [model]
    import sys

    from transformers import AutoTokenizer

    from sparselens.models.source import resolve_model_dir

    model = sys.argv[1] if len(sys.argv) > 1 else "gemma-3-270m"
    table = measure(AutoTokenizer.from_pretrained(resolve_model_dir(model)))
    print(f"{'part':12s} {'documents':>10s} {'characters':>12s} {'tokens':>10s}")
    for part, row in table.items():
        print(f"{part:12s} {row['documents']:10d} {row['characters']:12d} {row['tokens']:10d}")
