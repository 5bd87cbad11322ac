"""Readers for user corpora: text folders, JSONL, Parquet and Hugging Face ``save_to_disk`` folders.

Each reader streams documents, so memory follows the largest document or record batch, never
the corpus size. Files inside a folder are read in sorted order, so the document order is the
same on every machine. Malformed input raises ``ValueError`` naming the file (and line or row).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TEXT_SUFFIXES = (".txt", ".md")


def _existing(path: str | Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist; check the corpus path")
    return path


def files_with_suffix(path: str | Path, suffixes: tuple[str, ...], what: str) -> list[Path]:
    """`path` itself if it is a file, else its files (recursive) ending in `suffixes`, sorted."""
    path = _existing(path, what)
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(suffixes))
    if not files:
        raise FileNotFoundError(f"{what} folder {path} holds no {'/'.join(suffixes)} files")
    return files


def read_text_file(path: Path) -> str:
    """Undecodable bytes become U+FFFD rather than failing a long harvest on one stray file."""
    return path.read_text(encoding="utf-8", errors="replace")


def _text_value(value: Any, field: str, where: str) -> str | None:
    """The document text of one record; None (a missing value) is skipped, not an error."""
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"{where}: field {field!r} holds {type(value).__name__}, not text; "
                     "choose a text field with --corpus.field")


def iter_jsonl(path: str | Path, field: str) -> Iterator[str]:
    """The `field` of every line of a .jsonl file (or of every .jsonl file under a folder)."""
    return _jsonl_texts(files_with_suffix(path, (".jsonl",), "JSONL corpus"), field)


def _jsonl_texts(files: list[Path], field: str) -> Iterator[str]:
    for file in files:
        with open(file, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                where = f"{file}, line {number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{where} is not valid JSON ({err.msg}); fix or remove "
                                     "that line") from None
                if not isinstance(record, dict) or field not in record:
                    keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                    raise ValueError(f"{where} has no field {field!r} (it has {keys}); choose "
                                     "the text field with --corpus.field")
                text = _text_value(record[field], field, where)
                if text is not None:
                    yield text


def _check_column(names: list[str], field: str, where: Path) -> None:
    if field not in names:
        raise ValueError(f"{where} has no column {field!r} (columns: {names}); choose the "
                         "text column with --corpus.field")


def _open_parquet(file: Path, field: str) -> Any:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(file)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise ValueError(f"{file} is not a readable Parquet file ({err})") from None
    _check_column(parquet.schema_arrow.names, field, file)
    return parquet


def iter_parquet(path: str | Path, field: str, batch_rows: int = 1024) -> Iterator[str]:
    """The `field` column of a .parquet file (or every .parquet under a folder), read in
    batches of `batch_rows` rows. Every file's schema is checked before the first document."""
    files = files_with_suffix(path, (".parquet",), "Parquet corpus")
    for file in files:
        _open_parquet(file, field)
    return _parquet_texts(files, field, batch_rows)


def _parquet_texts(files: list[Path], field: str, batch_rows: int) -> Iterator[str]:
    for file in files:
        parquet, row = _open_parquet(file, field), 0
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=[field]):
            yield from _column_texts(batch.column(0).to_pylist(), field, file, row)
            row += batch.num_rows


def _column_texts(values: list[Any], field: str, file: Path, first_row: int) -> Iterator[str]:
    for row, value in enumerate(values, start=first_row):
        text = _text_value(value, field, f"{file}, row {row}")
        if text is not None:
            yield text


def _hf_split_dir(path: Path, split: str) -> Path:
    """A DatasetDict folder holds one Dataset folder per split; pick `split`."""
    listing = path / "dataset_dict.json"
    if not listing.exists():
        return path
    splits = json.loads(listing.read_text()).get("splits", [])
    if split not in splits:
        raise ValueError(f"{path} is a DatasetDict with splits {splits}, not {split!r}; "
                         "choose one with --corpus.split")
    return path / split


def hf_arrow_files(path: str | Path, split: str = "train") -> list[Path]:
    """The arrow stream files of a dataset written by ``datasets`` ``save_to_disk``, in order."""
    folder = _hf_split_dir(_existing(path, "Hugging Face dataset folder"), split)
    state_path = folder / "state.json"
    if not state_path.exists():
        raise FileNotFoundError(f"{folder} has no state.json; point at a folder written by "
                                "datasets' save_to_disk")
    try:
        state = json.loads(state_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{state_path} is not valid JSON ({err.msg})") from None
    if state.get("_indices_data_files"):
        raise ValueError(f"{folder} was saved with an indices mapping; call flatten_indices() "
                         "on the dataset before save_to_disk")
    files = []
    for entry in state.get("_data_files", []):
        name = entry.get("filename", "") if isinstance(entry, dict) else ""
        if not name or Path(name).name != name:
            raise ValueError(f"{state_path} lists data file {name!r}, which is not a plain "
                             "file name in that folder")
        if not (folder / name).exists():
            raise FileNotFoundError(f"{folder} is missing the data file {name} that "
                                    "state.json lists; the dataset folder is incomplete")
        files.append(folder / name)
    if not files:
        raise ValueError(f"{state_path} lists no data files")
    return files


def _open_arrow_stream(source: Any, file: Path, field: str) -> Any:
    import pyarrow as pa

    try:
        reader = pa.ipc.open_stream(source)
    except pa.ArrowInvalid as err:
        raise ValueError(f"{file} is not an Arrow stream file ({err}); is this folder really "
                         "written by datasets' save_to_disk?") from None
    _check_column(reader.schema.names, field, file)
    return reader


def iter_hf_disk(path: str | Path, field: str, split: str = "train") -> Iterator[str]:
    """The `field` of every row of a ``save_to_disk`` dataset, read with pyarrow record batch by
    record batch (the ``datasets`` package is not needed). Every file's schema is checked
    before the first document."""
    import pyarrow as pa

    files = hf_arrow_files(path, split)
    for file in files:
        with pa.memory_map(str(file)) as source:
            _open_arrow_stream(source, file, field)
    return _hf_texts(files, field)


def _hf_texts(files: list[Path], field: str) -> Iterator[str]:
    import pyarrow as pa

    for file in files:
        with pa.memory_map(str(file)) as source:
            row = 0
            for batch in _open_arrow_stream(source, file, field):
                yield from _column_texts(batch.column(field).to_pylist(), field, file, row)
                row += batch.num_rows
