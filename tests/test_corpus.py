"""Corpus sources: the built-in corpus and the readers for user data, including their errors."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sparselens.data import builtin_corpus
from sparselens.data.corpus import CorpusConfig, describe, iter_texts

ROWS = [f"document number {i}" for i in range(10)]


def take(cfg: CorpusConfig, n: int) -> list[str]:
    return list(islice(iter_texts(cfg), n))


# --- built-in corpus -------------------------------------------------------------------------

def test_builtin_is_deterministic_and_the_seed_only_reorders() -> None:
    first = take(CorpusConfig(seed=1), 20)
    assert first == take(CorpusConfig(seed=1), 20)
    assert first != take(CorpusConfig(seed=2), 20)
    refs = builtin_corpus.document_refs()
    assert refs == sorted(refs, key=lambda r: (builtin_corpus.PARTS.index(r.part), r.key))
    assert {r.part for r in refs} == {"reference", "source", "packages"}
    assert any(r.key == "json/decoder.py" for r in refs)
    assert not any(r.key.startswith("test/") or "/tests/" in r.key for r in refs)


def test_builtin_unshuffled_starts_with_the_sorted_reference_topics() -> None:
    from pydoc_data.topics import topics

    texts = take(CorpusConfig(shuffle=False), 2)
    assert texts == [topics[k] for k in sorted(topics)[:2]]


def test_builtin_streams_one_document_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = []
    real = builtin_corpus.load_document
    monkeypatch.setattr(builtin_corpus, "load_document",
                        lambda ref: loaded.append(ref) or real(ref))
    texts = iter_texts(CorpusConfig(builtin_parts=("source",)))
    assert not isinstance(texts, list) and loaded == []
    next(texts), next(texts)
    assert 2 <= len(loaded) <= 3  # an empty file would be read and skipped


def test_max_documents_and_docstrings_part() -> None:
    cfg = CorpusConfig(builtin_parts=("docstrings",), max_documents=3, shuffle=False)
    texts = list(iter_texts(cfg))
    assert len(texts) == 3 and all(t.strip() for t in texts)
    prose = builtin_corpus.extract_docstrings(
        'class A:\n    """Alpha."""\n    def f(self):\n        """Does f."""\n', module="m")
    assert prose == "m.A\n\nAlpha.\n\n\nm.A.f\n\nDoes f."


def test_describe_is_json_and_fingerprints_the_document_list() -> None:
    record = describe(CorpusConfig())
    assert json.loads(json.dumps(record)) == record
    assert record["n_documents_listed"] > 500 and len(record["fingerprint"]) == 16
    other = describe(CorpusConfig(builtin_parts=("reference",)))
    assert other["fingerprint"] != record["fingerprint"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"source": "web"}, "unknown corpus source"),
    ({"source": "jsonl"}, "needs a path"),
    ({"max_documents": 0}, "max_documents"),
    ({"builtin_parts": ("novels",)}, "unknown builtin_parts"),
])
def test_bad_config_is_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CorpusConfig(**kwargs)


@pytest.mark.slow
def test_builtin_corpus_has_at_least_two_million_gemma_tokens() -> None:
    """Counted in full, not extrapolated: tokenizing the whole corpus takes seconds."""
    from transformers import AutoTokenizer

    from sparselens.data.chunking import chunk_texts
    from sparselens.models.source import resolve_model_dir

    tok = AutoTokenizer.from_pretrained(resolve_model_dir("gemma-3-270m"))
    text_tokens = sum(int((~c.special).sum())
                      for c in chunk_texts(iter_texts(CorpusConfig()), tok, context_len=1024))
    assert text_tokens >= 2_000_000


# --- text folders and JSONL ------------------------------------------------------------------

def test_text_folder_is_recursive_sorted_and_shuffled_by_seed(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.md").write_text("second")
    (tmp_path / "1.txt").write_text("first")
    (tmp_path / "c.txt").write_text("third")
    (tmp_path / "skip.csv").write_text("not text")
    (tmp_path / "blank.txt").write_text("  \n")
    cfg = CorpusConfig(source="text", path=str(tmp_path), shuffle=False)
    assert list(iter_texts(cfg)) == ["first", "second", "third"]
    shuffled = [list(iter_texts(CorpusConfig(source="text", path=str(tmp_path), seed=s)))
                for s in range(6)]
    assert all(sorted(s) == ["first", "second", "third"] for s in shuffled)
    assert len({tuple(s) for s in shuffled}) > 1


def test_missing_or_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        iter_texts(CorpusConfig(source="text", path=str(tmp_path / "nope")))
    with pytest.raises(FileNotFoundError, match="holds no"):
        iter_texts(CorpusConfig(source="text", path=str(tmp_path)))


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_jsonl_reads_the_chosen_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"body": t, "id": i} for i, t in enumerate(ROWS)])
    with open(path, "a") as handle:
        handle.write("\n" + json.dumps({"body": None}) + "\n")  # blank line and null: skipped
    assert list(iter_texts(CorpusConfig(source="jsonl", path=str(path), field="body"))) == ROWS


@pytest.mark.parametrize(("line", "message"), [
    ('{"text": "ok"', r"line 2 is not valid JSON"),
    ('{"title": "x"}', r"line 2 has no field 'text' \(it has \['title'\]\)"),
    ('{"text": 5}', r"line 2: field 'text' holds int"),
])
def test_malformed_jsonl_names_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(ValueError, match=message):
        list(iter_texts(CorpusConfig(source="jsonl", path=str(path))))


# --- Parquet -----------------------------------------------------------------------------------

def test_parquet_reads_a_column_across_row_groups_and_files(tmp_path: Path) -> None:
    table = pa.table({"content": ROWS, "n": list(range(10))})
    pq.write_table(table.slice(0, 6), tmp_path / "part-0.parquet", row_group_size=2)
    pq.write_table(table.slice(6), tmp_path / "part-1.parquet", row_group_size=3)
    cfg = CorpusConfig(source="parquet", path=str(tmp_path), field="content")
    assert list(iter_texts(cfg)) == ROWS
    assert describe(cfg)["n_files"] == 2


def test_parquet_missing_column_is_refused_before_reading(tmp_path: Path) -> None:
    pq.write_table(pa.table({"content": ROWS}), tmp_path / "x.parquet")
    with pytest.raises(ValueError, match=r"no column 'text' \(columns: \['content'\]\)"):
        iter_texts(CorpusConfig(source="parquet", path=str(tmp_path / "x.parquet")))


# --- Hugging Face save_to_disk -------------------------------------------------------------

def write_hf_dataset(folder: Path, shards: list[list[str]], field: str = "text") -> Path:
    """The layout ``Dataset.save_to_disk`` writes: arrow IPC *stream* shards, state.json and
    dataset_info.json, built here with pyarrow alone."""
    folder.mkdir(parents=True)
    names = [f"data-{i:05d}-of-{len(shards):05d}.arrow" for i in range(len(shards))]
    for name, rows in zip(names, shards):
        table = pa.table({field: rows, "label": list(range(len(rows)))})
        with pa.OSFile(str(folder / name), "wb") as sink, \
                pa.ipc.new_stream(sink, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=2):
                writer.write_batch(batch)
    state = {"_data_files": [{"filename": n} for n in names], "_fingerprint": "abc",
             "_format_columns": None, "_format_kwargs": {}, "_format_type": None,
             "_output_all_columns": False, "_split": None}
    (folder / "state.json").write_text(json.dumps(state))
    info = {"features": {field: {"dtype": "string", "_type": "Value"},
                         "label": {"dtype": "int64", "_type": "Value"}}}
    (folder / "dataset_info.json").write_text(json.dumps(info))
    return folder


def test_hf_disk_reads_every_shard_in_order(tmp_path: Path) -> None:
    folder = write_hf_dataset(tmp_path / "ds", [ROWS[:7], ROWS[7:]])
    assert list(iter_texts(CorpusConfig(source="hf_disk", path=str(folder)))) == ROWS


def test_hf_disk_dataset_dict_picks_the_split(tmp_path: Path) -> None:
    write_hf_dataset(tmp_path / "dd" / "train", [ROWS[:4]])
    write_hf_dataset(tmp_path / "dd" / "test", [ROWS[4:]])
    (tmp_path / "dd" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    cfg = CorpusConfig(source="hf_disk", path=str(tmp_path / "dd"), split="test")
    assert list(iter_texts(cfg)) == ROWS[4:]
    with pytest.raises(ValueError, match=r"splits \['train', 'test'\], not 'validation'"):
        iter_texts(CorpusConfig(source="hf_disk", path=str(tmp_path / "dd"), split="validation"))


def test_hf_disk_errors_name_the_problem(tmp_path: Path) -> None:
    folder = write_hf_dataset(tmp_path / "ds", [ROWS[:5], ROWS[5:]])
    with pytest.raises(ValueError, match="no column 'body'"):
        iter_texts(CorpusConfig(source="hf_disk", path=str(folder), field="body"))
    (folder / "data-00001-of-00002.arrow").unlink()
    with pytest.raises(FileNotFoundError, match="missing the data file data-00001"):
        iter_texts(CorpusConfig(source="hf_disk", path=str(folder)))
    with pytest.raises(FileNotFoundError, match="no state.json"):
        iter_texts(CorpusConfig(source="hf_disk", path=str(tmp_path)))


def test_hf_disk_reads_a_folder_written_by_the_datasets_library(tmp_path: Path) -> None:
    """Cross-check of the hand-made fixture against the real writer, where it is installed."""
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ROWS}).save_to_disk(str(tmp_path / "ds"), num_shards=2)
    assert list(iter_texts(CorpusConfig(source="hf_disk", path=str(tmp_path / "ds")))) == ROWS


def test_generated_source_without_a_cache_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="create it with generate_corpus"):
        iter_texts(CorpusConfig(source="generated", path=str(tmp_path)))


def test_corpus_config_round_trips_through_the_command_line() -> None:
    import argparse
    from dataclasses import dataclass, field

    from sparselens.cli.options import add_options, build_config

    @dataclass
    class Command:
        corpus: CorpusConfig = field(default_factory=CorpusConfig)

    parser = argparse.ArgumentParser()
    add_options(parser, Command)
    args = parser.parse_args(["--corpus.source", "jsonl", "--corpus.path", "x.jsonl",
                              "--corpus.builtin-parts", "reference", "source",
                              "--corpus.generation.top-p", "0.9"])
    cfg = build_config(Command, vars(args)).corpus
    assert (cfg.source, cfg.path, cfg.builtin_parts) == ("jsonl", "x.jsonl",
                                                         ("reference", "source"))
    assert cfg.generation.top_p == 0.9 and cfg.generation.documents == 512
    assert "Stop after this many non-empty documents" in parser.format_help()
