"""Which files the viewer may open, and how a served dictionary's files are found.

The server never turns a URL into a path: dictionaries are addressed by name, assets by a
fixed table. Files next to a dictionary are opened only by known names, and only when they
resolve inside the folder they were looked up in, so a symlink planted in a run folder
(``explanations.jsonl -> ~/.ssh/id_rsa``) is refused, not served.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sparselens.interpretation.examples import EXAMPLES_FILE
from sparselens.interpretation.store import STORE_FOLDER

EVAL_FILES = ("eval.json",)
BENCH_FILES = ("bench.json", "eval_suite.json", "evalsuite.json")
TRAIN_LOG = "metrics.jsonl"
EXPLANATION_GLOBS = ("explanations*.jsonl", "explain/explanations*.jsonl",
                     "explanations/*.jsonl")


def inside(folder: Path, name: str) -> Path | None:
    """``folder / name`` if it is a regular file that resolves inside `folder`, else None
    (with a warning when it exists but points elsewhere)."""
    path = folder / name
    if not path.exists():
        return None
    root = folder.resolve()
    target = path.resolve()
    if not target.is_relative_to(root) or not target.is_file():
        warnings.warn(f"not serving {path}: it resolves to {target}, outside {root} (or is not "
                      "a regular file)", stacklevel=2)
        return None
    return target


def run_folder(dictionary_folder: Path) -> Path:
    """The training output folder of a checkpoint (``OUT/checkpoints/step_N`` -> ``OUT``)."""
    if dictionary_folder.parent.name == "checkpoints":
        return dictionary_folder.parent.parent
    return dictionary_folder


def example_store_candidates(folder: Path) -> Iterable[Path]:
    """Where `sparselens report` and `sparselens run` leave an example store for `folder`:
    inside it, in its ``report/``, or, for the ``sae/`` folder of a `sparselens run` layout,
    the run's sibling ``report/`` (runs/X/sae -> runs/X/report); last, the store `sparselens
    explain` collects beside the dictionary (``examples/``), so a dictionary that was only
    explained is served without ``--examples``."""
    run = run_folder(folder)
    yield folder
    yield folder / "report"
    yield run / "report"
    if run.name == "sae":
        yield run.parent / "report"
    yield folder / STORE_FOLDER


def find_example_store(folder: Path, given: Path | None = None) -> Path | None:
    """The example store file for the dictionary in `folder` (or in `given`), if any."""
    for candidate in ([given] if given is not None else example_store_candidates(folder)):
        found = inside(candidate, EXAMPLES_FILE) if candidate.is_dir() else None
        if found is not None:
            return found
    return None


def find_cache(folder: Path) -> Path | None:
    """The activation cache of a `sparselens run` layout (runs/X/sae -> runs/X/cache)."""
    run = run_folder(folder)
    for candidate in (run / "cache", run.parent / "cache"):
        if (candidate / "manifest.json").is_file():
            return candidate
    return None


def explanation_files(folder: Path) -> list[Path]:
    """Explanation JSONL files next to a dictionary (whatever the explainer wrote)."""
    found = []
    for pattern in EXPLANATION_GLOBS:
        for path in sorted(folder.glob(pattern)):
            safe = inside(path.parent, path.name)
            if safe is not None and safe.is_relative_to(folder.resolve()):
                found.append(safe)
    return found


def read_checked_json(path: Path, label: str, kind: str, check: Callable[[Any], str | None],
                      how_to_write: str) -> Any:
    """The JSON record a user passed to serve (a graph, a comparison), read and checked; a
    ValueError that names the `label` file, the problem, and how to write a good one."""
    if not path.is_file():
        raise ValueError(f"{label} file {path} does not exist; {how_to_write}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{label} file {path} is not valid JSON ({err}); {how_to_write}"
                         ) from None
    problem = check(data)
    if problem:
        raise ValueError(f"{label} file {path} is not {kind}: {problem}; {how_to_write}")
    return data
