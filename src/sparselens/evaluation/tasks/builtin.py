"""The built-in tasks: labelled text from files every machine with Python has, plus templates.

- ``reference_section``: a paragraph of the Python reference topics that ``help()`` shows
  (``pydoc_data.topics``, shipped with CPython) labelled by the part of the documentation its
  topic belongs to (statements, expressions, data model, built-in types, lexical/execution
  model). Document = topic. Depends only on the Python version.
- ``code_language``: a chunk of an installed source file labelled by language (from the file
  extension: Python, C, C++, Cython, Fortran, JavaScript), read from the standard library and
  site-packages. Document = file. Depends on the installed packages (the project's pinned
  install gives the same files on every machine).
- ``natural_language``: a translated message from the gettext catalogues under
  /usr/share/locale, labelled by language. Document = catalogue (domain). Depends on the OS
  packages; on a bare system with too few catalogues the task is skipped, with the reason.
- ``sentiment``: template sentences with a positive or negative adjective. Document = template,
  so test sentences use templates never seen in training. Always available.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import struct
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

from sparselens.evaluation.tasks.task import LabelledTask

REFERENCE_PARTS = {
    "statements": "assert assignment async augassign break class compound continue del else "
                  "for function global if import nonlocal pass raise return try while with "
                  "yield",
    "expressions": "atom-identifiers atom-literals attribute-references await binary bitwise "
                   "booleans calls comparisons conversions dict exprlists in lambda lists "
                   "operator-summary power shifting slicings subscriptions unary",
    "data_model": "attribute-access callable-types context-managers customization "
                  "numeric-types objects sequence-types specialnames types",
    "builtin_types": "bltin-code-objects bltin-ellipsis-object bltin-null-object "
                     "bltin-type-objects formatstrings specialattrs string-methods truth "
                     "typesfunctions typesmapping typesmethods typesmodules typesseq "
                     "typesseq-mutable",
    "lexical_execution": "dynamic-features exceptions execmodel floating id-classes identifiers "
                         "imaginary integers naming numbers strings",
}
CODE_EXTENSIONS = {".py": "python", ".c": "c", ".cpp": "cpp", ".cc": "cpp", ".hpp": "cpp",
                   ".pyx": "cython", ".f": "fortran", ".f90": "fortran", ".js": "javascript"}
LANGUAGES = ("de", "fr", "es", "it", "ru", "ja", "pl", "pt", "sv", "zh")
LOCALE_DIR = Path("/usr/share/locale")
CHUNK_CHARS = 600
MIN_CHARS = 60


def reference_section_task() -> LabelledTask:
    from pydoc_data.topics import topics

    texts, labels, docs = [], [], []
    for part, names in REFERENCE_PARTS.items():
        for topic in names.split():
            for paragraph in topics.get(topic, "").split("\n\n"):
                paragraph = " ".join(paragraph.split())
                if len(paragraph) >= MIN_CHARS and not set(paragraph) <= set("*= "):
                    texts.append(paragraph[:CHUNK_CHARS])
                    labels.append(part)
                    docs.append(topic)
    return LabelledTask("reference_section", texts, labels, docs,
                        "part of the Python reference a help() topic paragraph comes from",
                        {"python": sys.version.split()[0]})


def _source_roots() -> list[Path]:
    paths = sysconfig.get_paths()
    return sorted({Path(paths["stdlib"]), Path(paths["purelib"]), Path(paths["platlib"])})


def _source_files() -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for root in _source_roots():
        for folder, subdirs, names in os.walk(root):
            if Path(folder) == root and root.name.startswith("python"):
                subdirs[:] = [d for d in subdirs if d != "site-packages"]  # another venv's
            subdirs.sort()
            for name in sorted(names):
                language = CODE_EXTENSIONS.get(os.path.splitext(name)[1].lower())
                if language:
                    found.setdefault(language, []).append(Path(folder) / name)
    return found


def code_language_task(files_per_language: int = 150, chunks_per_file: int = 2) -> LabelledTask:
    texts, labels, docs = [], [], []
    for language, paths in sorted(_source_files().items()):
        # A stable pseudo-random choice of files, independent of the walk order.
        chosen = sorted(paths, key=lambda p: hashlib.sha256(str(p).encode()).hexdigest())
        for path in chosen[:files_per_language]:
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            # Skip the first third: file heads are licence boilerplate shared by languages.
            start = len(text) // 3
            for offset in range(chunks_per_file):
                chunk = text[start + offset * CHUNK_CHARS:start + (offset + 1) * CHUNK_CHARS]
                if len(chunk.strip()) >= MIN_CHARS:
                    texts.append(chunk)
                    labels.append(language)
                    docs.append(str(path))
    return LabelledTask("code_language", texts, labels, docs,
                        "programming language of a chunk of an installed source file",
                        {"roots": [str(r) for r in _source_roots()]})


def read_mo(path: Path) -> list[str]:
    """The translated strings of a GNU gettext .mo catalogue (plural forms split)."""
    data = path.read_bytes()
    if len(data) < 28:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    order = "<" if magic == 0x950412DE else ">" if magic == 0xDE120495 else None
    if order is None:
        return []
    _, count, _, trans_offset = struct.unpack(order + "4I", data[4:20])
    out = []
    for i in range(count):
        length, offset = struct.unpack(order + "2I", data[trans_offset + 8 * i:
                                                            trans_offset + 8 * i + 8])
        text = data[offset:offset + length].decode("utf-8", errors="replace")
        if i == 0 and text.startswith("Project-Id-Version") or "Content-Type:" in text:
            continue  # the header entry
        out.extend(part for part in text.split("\x00") if part)
    return out


def natural_language_task(locale_dir: Path = LOCALE_DIR, per_catalogue: int = 20,
                          min_catalogues: int = 3) -> LabelledTask:
    texts, labels, docs = [], [], []
    for language in LANGUAGES:
        catalogues = sorted(itertools.chain.from_iterable(
            d.glob("LC_MESSAGES/*.mo") for d in sorted(locale_dir.glob(f"{language}*"))
            if d.name == language or d.name.startswith(language + "_")))
        by_domain = {c.stem: c for c in catalogues}  # one catalogue per domain
        if len(by_domain) < min_catalogues:
            continue
        for domain, path in sorted(by_domain.items()):
            strings = [" ".join(s.split()) for s in read_mo(path)]
            strings = [s for s in strings if len(s) >= 40]
            for s in strings[:per_catalogue]:
                texts.append(s[:CHUNK_CHARS])
                labels.append(language)
                docs.append(domain)
    return LabelledTask("natural_language", texts, labels, docs,
                        "language of a translated message from the system's gettext catalogues",
                        {"locale_dir": str(locale_dir)})


SUBJECTS = ("the film", "this restaurant", "the new phone", "our holiday", "the concert",
            "his latest book", "the hotel room", "the service", "that game", "the lecture")
POSITIVE = ("wonderful", "excellent", "delightful", "superb", "fantastic", "lovely",
            "brilliant", "great", "pleasant", "charming")
NEGATIVE = ("terrible", "awful", "dreadful", "horrible", "disappointing", "boring",
            "miserable", "poor", "unpleasant", "annoying")
TEMPLATES = ("I thought {s} was {a}.", "Honestly, {s} was {a}, and I would say so again.",
             "Everyone agreed that {s} was {a}.", "My friends told me {s} was {a}.",
             "In short: {s} was {a}.", "Looking back, {s} seems {a} to me.",
             "The review said {s} was {a}.", "After a week I still find {s} {a}.",
             "We all found {s} rather {a}.", "Without doubt {s} was {a}.")


def sentiment_task() -> LabelledTask:
    texts, labels, docs = [], [], []
    for t, template in enumerate(TEMPLATES):
        for subject in SUBJECTS:
            for label, words in (("positive", POSITIVE), ("negative", NEGATIVE)):
                for adjective in words:
                    texts.append(template.format(s=subject, a=adjective))
                    labels.append(label)
                    docs.append(f"template{t}")
    return LabelledTask("sentiment", texts, labels, docs,
                        "sentiment of a template sentence (positive/negative adjective)")


ENTERTAINMENT = {"the film", "the concert", "his latest book", "that game", "the lecture"}


def topic_sentiment_task() -> LabelledTask:
    """Two binary attributes per sentence, for SCR: topic (entertainment or service/product,
    from the subject) and sentiment (from the adjective); label ``"topic,sentiment"``."""
    base = sentiment_task()
    labels = [("entertainment" if any(s in text for s in ENTERTAINMENT) else "service")
              + "," + label for text, label in zip(base.texts, base.labels)]
    return LabelledTask("topic_sentiment", base.texts, labels, base.documents,
                        "topic and sentiment of a template sentence (two attributes, for SCR)")


BUILTIN_TASKS: dict[str, Callable[[], LabelledTask]] = {
    "reference_section": reference_section_task, "code_language": code_language_task,
    "natural_language": natural_language_task, "sentiment": sentiment_task}
"""Multi-class tasks for sparse probing and TPP; `topic_sentiment_task` is SCR's."""


def build_task(name: str) -> LabelledTask:
    if name not in BUILTIN_TASKS:
        raise ValueError(f"no built-in task {name!r}; known: {sorted(BUILTIN_TASKS)}")
    return BUILTIN_TASKS[name]()


def builtin_tasks(names: list[str] | None = None, *, max_per_class: int = 200,
                  seed: int = 0) -> tuple[list[LabelledTask], dict[str, str]]:
    """The usable built-in tasks (subsampled) and, per skipped task, why it was skipped."""
    tasks, skipped = [], {}
    for name in names or list(BUILTIN_TASKS):
        task = build_task(name)
        try:
            task.check()
            task.split()
        except ValueError as error:
            skipped[name] = str(error)
            continue
        tasks.append(task.subsample(max_per_class, seed))
    return tasks, skipped
