"""Distributed harvesting: two gloo ranks on 127.0.0.1 write the cache one process writes.

Each rank forwards whole shards, so the bytes of every shard and of the manifest must equal a
single process's exactly (both sides run the model with one thread). A harvest interrupted
under two ranks resumes under two ranks or under one, to the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from unittest.mock import patch

import pytest
import torch.multiprocessing as mp

from conftest import folder_bytes, free_port, join_as_rank, make_tiny_llama, random_chunks
from sparselens.data.cache import ActivationCache
from sparselens.data.harvest import HarvestConfig, harvest
from sparselens.data.taps import read_chunks
from sparselens.distributed import distributed_session

HOOKPOINTS = ["resid.0", "mlp_in.2"]
WORLD = 2
CHUNKS = 20  # 8 sequences (120 rows) a shard: shards of 8, 8 and 4 sequences, an odd count
CONFIG = HarvestConfig(storage_dtype="float32", batch_size=4, shard_tokens=100, progress=False)


def run(out: Path, max_shards: int | None = None) -> dict:
    cfg = HarvestConfig(**{**vars(CONFIG), "max_shards": max_shards})
    return harvest(make_tiny_llama(), random_chunks(CHUNKS), HOOKPOINTS, out, cfg)


def worker(rank: int, port: int, tmp: Path) -> None:
    join_as_rank(rank, WORLD, port)
    forwarded = []  # the sequences this rank ran the model on, in the first harvest

    def counting_read_chunks(taps, chunks, first_seq):
        forwarded.extend(range(first_seq, first_seq + len(chunks)))
        return read_chunks(taps, chunks, first_seq)

    with distributed_session("cpu"):
        with patch("sparselens.data.harvest.read_chunks", counting_read_chunks):
            run(tmp / "two")
        (tmp / f"forwarded_by_rank{rank}.json").write_text(json.dumps(forwarded))
        run(tmp / "resumed", max_shards=1)  # a round in which rank 1 has nothing to do
        run(tmp / "resumed")
        run(tmp / "handed_over", max_shards=2)  # finished by one process below


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    tmp = tmp_path_factory.mktemp("distributed_harvest")
    mp.spawn(worker, args=(free_port(), tmp), nprocs=WORLD, join=True)
    run(tmp / "one")
    return tmp


def test_two_ranks_write_the_single_process_cache(folders: Path) -> None:
    one = ActivationCache.open(folders / "one")
    assert len(one.manifest["shards"]) == 3 and one.n_tokens == CHUNKS * 15
    assert folder_bytes(folders / "two") == folder_bytes(folders / "one")
    by_rank = [json.loads((folders / f"forwarded_by_rank{r}.json").read_text())
               for r in range(WORLD)]
    assert by_rank[0] == list(range(0, 8)) + list(range(16, 20))  # shards 0 and 2
    assert by_rank[1] == list(range(8, 16))  # shard 1: the work was split, none done twice


def test_interrupted_distributed_harvest_resumes_exactly(folders: Path) -> None:
    assert folder_bytes(folders / "resumed") == folder_bytes(folders / "one")


def test_a_single_process_finishes_what_two_ranks_started(folders: Path) -> None:
    partial = ActivationCache.open(folders / "handed_over", allow_incomplete=True)
    assert len(partial.manifest["shards"]) == 2 and not partial.manifest["complete"]
    run(folders / "handed_over")
    assert folder_bytes(folders / "handed_over") == folder_bytes(folders / "one")


def test_a_folder_rank_zero_cannot_see_is_refused(tmp_path: Path) -> None:
    from sparselens.data.harvest import _check_visible
    from sparselens.data.shards import ShardRecord

    (tmp_path / "shard-00000.safetensors").write_bytes(b"written by rank 0")
    records = [ShardRecord(file=f"shard-0000{i}.safetensors", sha256="0" * 64, bytes=1,
                           n_rows=1, n_train_rows=1, first_sequence=i, n_sequences=1)
               for i in range(2)]
    _check_visible(tmp_path, records[:1])
    with pytest.raises(ValueError, match="shard-00001.*filesystem every rank sees"):
        _check_visible(tmp_path, records)
