"""Labelled tasks: disjoint splits by document, clear errors, user files, offline builders."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from sparselens.evaluation.tasks import LabelledTask, build_task, load_labelled_file
from sparselens.evaluation.tasks.builtin import natural_language_task, read_mo


def _disjoint(task: LabelledTask) -> None:
    split = task.split()
    train_docs = {task.documents[i] for i in split.train}
    test_docs = {task.documents[i] for i in split.test}
    assert not train_docs & test_docs
    assert sorted(split.train + split.test) == list(range(len(task.texts)))
    assert {task.labels[i] for i in split.test} == set(task.classes)
    assert {task.labels[i] for i in split.train} == set(task.classes)


@pytest.mark.parametrize("name", ["reference_section", "sentiment"])
def test_builtin_tasks_split_by_document(name: str) -> None:
    task = build_task(name)
    task.check()
    assert len(task.classes) >= 2 and len(task.texts) >= 500
    _disjoint(task)
    assert task.split(seed=1).test != task.split(seed=0).test
    assert task.checksum() == build_task(name).checksum(), "tasks must be reproducible"


def test_subsample_caps_each_class() -> None:
    task = build_task("reference_section").subsample(50, seed=0)
    assert all(count <= 50 for count in task.balance().values())
    _disjoint(task)


def test_bad_tasks_are_refused_with_reasons() -> None:
    one = LabelledTask("one", ["a", "b"], ["x", "x"], ["d1", "d2"])
    with pytest.raises(ValueError, match="at least two labels"):
        one.check()
    few = LabelledTask("few", ["a", "b", "c"], ["x", "y", "y"], ["d1", "d2", "d3"])
    with pytest.raises(ValueError, match="fewer than 4"):
        few.check()
    single_doc = LabelledTask("doc", ["a", "b", "c", "d"], ["x", "x", "y", "y"],
                              ["d1", "d1", "d2", "d3"])
    with pytest.raises(ValueError, match="single document"):
        single_doc.split()
    with pytest.raises(ValueError, match="known"):
        build_task("nope")


def test_user_files(tmp_path: Path) -> None:
    csv_path = tmp_path / "mine.csv"
    csv_path.write_text("text,label\nhello,a\nworld,b\n")
    task = load_labelled_file(csv_path)
    assert task.labels == ["a", "b"] and task.documents == ["row0", "row1"]
    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": f"t{i}", "label": str(i % 2),
                                           "document": f"d{i // 2}"}) for i in range(8)))
    assert load_labelled_file(jsonl).documents[:3] == ["d0", "d0", "d1"]
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,label\nx,y\n")
    with pytest.raises(ValueError, match="needs columns"):
        load_labelled_file(bad)


def _write_mo(path: Path, messages: dict[str, str]) -> None:
    """A minimal little-endian GNU .mo file."""
    items = sorted(messages.items())
    ids = b"".join(k.encode() + b"\0" for k, _ in items)
    strs = b"".join(v.encode() + b"\0" for _, v in items)
    n = len(items)
    start = 28 + 16 * n
    table_o, table_t, pos = b"", b"", start
    for k, _ in items:
        table_o += struct.pack("<2I", len(k.encode()), pos)
        pos += len(k.encode()) + 1
    for _, v in items:
        table_t += struct.pack("<2I", len(v.encode()), pos)
        pos += len(v.encode()) + 1
    header = struct.pack("<7I", 0x950412DE, 0, n, 28, 28 + 8 * n, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + table_o + table_t + ids + strs)


def test_locale_catalogues(tmp_path: Path) -> None:
    german = "Die Datei konnte nicht geöffnet werden, bitte erneut versuchen"
    french = "Impossible d'ouvrir le fichier, veuillez réessayer plus tard"
    for domain in ("apt", "dpkg", "tar"):
        _write_mo(tmp_path / "de" / "LC_MESSAGES" / f"{domain}.mo", {f"m {domain}": german})
        _write_mo(tmp_path / "fr_FR" / "LC_MESSAGES" / f"{domain}.mo", {f"m {domain}": french})
    assert read_mo(tmp_path / "de" / "LC_MESSAGES" / "apt.mo") == [german]
    task = natural_language_task(tmp_path)
    assert task.balance() == {"de": 3, "fr": 3}
    _disjoint(task)
    sparse = natural_language_task(tmp_path, min_catalogues=4)
    with pytest.raises(ValueError, match="class"):
        sparse.check()
