"""Harvest throughput and memory on the embedded model.

Measures, for float32 and bfloat16 model dtypes at one hookpoint (default resid.6):
- tokens/s of a bare truncated forward (only the blocks up to the hookpoint, no hooks, no
  logits) against the full harvest pipeline (forward + capture + row selection + shard
  writes with checksums), and the pipeline's overhead in percent (target: at most 10 %);
- the cosine between bfloat16 and float32 activations (expected at least 0.999);
- peak RSS growth while harvesting, and while reading caches of two sizes (both many times
  the shuffle buffer) through ``ActivationCache.batches``: it should track the buffer, so the
  two numbers should be close although one cache is twice the other.

Prints a table and writes ``benchmarks/results/harvest.json``. ``--quick`` checks that the
script works in about a minute; timings on a shared machine are only indicative.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from sparselens.data.cache import ActivationCache
from sparselens.data.chunking import chunk_texts
from sparselens.data.corpus import CorpusConfig, iter_texts
from sparselens.data.harvest import HarvestConfig, harvest
from sparselens.data.taps import forward_kwargs, make_taps, read_chunks
from sparselens.models.hookpoints import find_blocks
from sparselens.models.source import LoadedModel, load_model

RESULTS = Path(__file__).parent / "results" / "harvest.json"
PAGE = os.sysconf("SC_PAGE_SIZE")
T = TypeVar("T")


class PeakRSS:
    """Samples this process's resident memory in a thread; `growth_mb` is peak minus start."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.start = self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def now() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * PAGE

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.now())

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self.now()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def corpus_chunks(tokenizer: object, n_tokens: int, context_len: int) -> list:
    """Chunks of the builtin corpus, tokenized once so no timing includes tokenization."""
    chunks = chunk_texts(iter_texts(CorpusConfig()), tokenizer, context_len)
    return list(islice(chunks, max(1, n_tokens // context_len)))


@torch.no_grad()
def bare_forward_seconds(model: nn.Module, layer: int, chunks: list, batch_size: int) -> float:
    """Time a forward through blocks 0..layer of the base model: no hooks, no head."""
    prefix, blocks = find_blocks(model)
    parent_name, attr = prefix.rsplit(".", 1)
    parent = model.get_submodule(parent_name)
    setattr(parent, attr, nn.ModuleList(list(blocks)[:layer + 1]))
    try:
        start = time.perf_counter()
        for i in range(0, len(chunks), batch_size):
            ids = torch.stack([c.ids for c in chunks[i:i + batch_size]])
            parent(input_ids=ids, **forward_kwargs(parent))
        return time.perf_counter() - start
    finally:
        setattr(parent, attr, blocks)


def harvest_seconds(loaded: LoadedModel, hookpoint: str, chunks: list,
                    batch_size: int) -> tuple[float, float, float]:
    """(seconds, peak RSS growth MB, peak RSS MB) of one harvest into a temporary folder."""
    with tempfile.TemporaryDirectory() as out, PeakRSS() as rss:
        start = time.perf_counter()
        harvest(loaded, chunks, [hookpoint], out,
                HarvestConfig(batch_size=batch_size, shard_tokens=16384, progress=False))
        seconds = time.perf_counter() - start
    return seconds, round(rss.growth_mb, 1), round(rss.peak / 2**20, 1)


def sample_rows(loaded: LoadedModel, hookpoint: str, chunks: list) -> torch.Tensor:
    """Activations of a few chunks, kept so that the model can be freed before the next."""
    return read_chunks(make_taps(loaded, [hookpoint]), chunks, 0).rows.acts[hookpoint].float()


def cosine(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    return {"mean": round(cos.mean().item(), 6), "min": round(cos.min().item(), 6)}


class Synthetic(nn.Module):
    """A cheap stand-in model for writing a large cache quickly: embedding + linear blocks."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(1024, width)
        self.layers = nn.ModuleList([nn.Linear(width, width) for _ in range(2)])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids % 1024)
        for layer in self.layers:
            x = x + layer(x)
        return x


def read_memory(cache_mb: int, width: int, buffer_shards: int, batch_size: int) -> dict:
    """Peak RSS growth while reading a `cache_mb` cache through a `buffer_shards` buffer.

    The cache is written by a cheap synthetic model; it is read in a fresh process so that
    the writer's (or an earlier reader's) allocator state neither hides nor inflates it."""
    rows = cache_mb * 2**20 // (2 * width)
    loaded = LoadedModel(model=Synthetic(width).eval(), tokenizer=None, name="synthetic")
    with tempfile.TemporaryDirectory() as out:
        harvest(loaded, (_chunk(i) for i in range(rows // 127 + 1)), ["resid.0"], out,
                HarvestConfig(batch_size=64, shard_tokens=16384, progress=False))
        return in_fresh_process(_read_peak, out, buffer_shards, batch_size)


def _read_peak(folder: str, buffer_shards: int, batch_size: int) -> dict:
    cache = ActivationCache.open(folder)
    cache.verify()
    disk_mb = sum(f.stat().st_size for f in Path(folder).iterdir()) / 2**20
    with PeakRSS() as rss:
        n = sum(len(b) for b in cache.batches(batch_size, buffer_shards=buffer_shards))
    return {"cache_mb": round(disk_mb, 1),
            "shard_mb": round(disk_mb / len(cache.manifest["shards"]), 1),
            "buffer_shards": buffer_shards, "rows_read": n,
            "peak_rss_growth_mb": round(rss.growth_mb, 1)}


def _chunk(index: int):
    from sparselens.data.chunking import Chunk

    ids = torch.randint(0, 1024, (128,), generator=torch.Generator().manual_seed(index))
    special = torch.zeros(128, dtype=torch.bool)
    special[0] = True
    return Chunk(ids=ids, special=special, doc_id=index)


def time_pipeline(loaded: LoadedModel, hookpoint: str, chunks: list,
                  args: argparse.Namespace) -> dict:
    """Bare truncated forward against the full harvest, interleaved, best of `repeats`."""
    layer = int(hookpoint.split(".")[1])
    tokens = len(chunks) * args.context_len
    bare_forward_seconds(loaded.model, layer, chunks[:args.batch_size], args.batch_size)
    bare, full, growth_mb, peak_mb = float("inf"), float("inf"), 0.0, 0.0
    for _ in range(args.repeats):  # interleaved, best of n: the machine is shared
        bare = min(bare, bare_forward_seconds(loaded.model, layer, chunks, args.batch_size))
        seconds, growth, peak = harvest_seconds(loaded, hookpoint, chunks, args.batch_size)
        full = min(full, seconds)
        growth_mb, peak_mb = max(growth_mb, growth), max(peak_mb, peak)
    return {"tokens": tokens, "bare_forward_tok_s": round(tokens / bare),
            "harvest_tok_s": round(tokens / full),
            "overhead_pct": round(100 * (full - bare) / bare, 1),
            "harvest_peak_rss_growth_mb": growth_mb, "harvest_peak_rss_mb": peak_mb}


def measure_dtype(dtype: str, hookpoint: str,
                  args: argparse.Namespace) -> tuple[dict, torch.Tensor]:
    """Timings and memory for one model dtype, plus sample activations for the cosine."""
    loaded = load_model("gemma-3-270m", dtype=dtype)
    chunks = corpus_chunks(loaded.tokenizer, args.tokens, args.context_len)
    return (time_pipeline(loaded, hookpoint, chunks, args),
            sample_rows(loaded, hookpoint, chunks[:8]))


def in_fresh_process(fn: Callable[..., T], *args: Any) -> T:
    """Run `fn` in a new process: each measurement starts from a clean allocator, and the
    peak RSS of one model dtype does not include the other model."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        return pool.submit(fn, *args).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=32768, help="tokens per timing run")
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per forward")
    parser.add_argument("--context-len", type=int, default=128)
    parser.add_argument("--read-cache-mb", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check it runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.read_cache_mb, args.repeats = 1024, 40, 2
    hookpoint = f"resid.{args.layer}"
    results: dict = {"hookpoint": hookpoint, "batch_size": args.batch_size,
                     "context_len": args.context_len, "threads": torch.get_num_threads(),
                     "dtypes": {}}
    samples = {}
    for dtype in ("float32", "bfloat16"):
        results["dtypes"][dtype], samples[dtype] = in_fresh_process(measure_dtype, dtype,
                                                                    hookpoint, args)
    results["bf16_vs_fp32_cosine"] = cosine(samples["float32"], samples["bfloat16"])
    results["read"] = [read_memory(mb, 640, buffer_shards=2, batch_size=4096)
                       for mb in (args.read_cache_mb // 2, args.read_cache_mb)]
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")


def print_table(results: dict) -> None:
    print(f"harvest at {results['hookpoint']}, {results['batch_size']} x "
          f"{results['context_len']} tokens a forward, {results['threads']} threads")
    print(f"{'model dtype':<12}{'tokens':>8}{'bare tok/s':>12}{'harvest tok/s':>15}"
          f"{'overhead':>10}{'peak RSS MB':>13}{'(+growth)':>11}")
    for dtype, r in results["dtypes"].items():
        print(f"{dtype:<12}{r['tokens']:>8}{r['bare_forward_tok_s']:>12}"
              f"{r['harvest_tok_s']:>15}{r['overhead_pct']:>9}%"
              f"{r['harvest_peak_rss_mb']:>13}{r['harvest_peak_rss_growth_mb']:>11}")
    cos = results["bf16_vs_fp32_cosine"]
    print(f"bf16 vs fp32 activation cosine: mean {cos['mean']}, min {cos['min']}")
    for read in results["read"]:
        print(f"reading a {read['cache_mb']} MB cache ({read['shard_mb']} MB shards, buffer "
              f"{read['buffer_shards']} shards): peak RSS +{read['peak_rss_growth_mb']} MB")


if __name__ == "__main__":
    main()
