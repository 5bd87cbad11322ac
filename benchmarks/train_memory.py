"""Peak memory of training from an activation cache, for caches of different sizes.

The cache reader keeps a window of a few shards in memory (`ActivationCache.batches`,
``buffer_shards``), so the peak resident memory of a training run must not grow with the size
of the cache. Each run trains the same TopK SAE for the same number of steps from one cache, in
a fresh interpreter (so its peak RSS, ``VmHWM``, is its own), and the table lists the peak next
to the size of the cache on disk.

    python benchmarks/train_memory.py                      # two synthetic caches, 64 MB and 1 GB
    python benchmarks/train_memory.py CACHE [CACHE ...]    # your own harvests

Without arguments it harvests (once) two caches of a small random 1-block Llama (width 256,
16 MB shards, so the reader's 4-shard window is 64 MB) with 64k and 1M tokens under
``$SPARSELENS_CACHE/bench``: the window fits in the small cache and is a fifteenth of the large
one. Caches given on the command line are any `sparselens harvest` output folders (the first
hookpoint is used). Writes ``benchmarks/results/train_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import run_isolated  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def peak_mb() -> float:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM:")).split()[1]) / 1024


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Train in this process and report its peak resident memory."""
    import torch

    from sparselens.data.cache import ActivationCache
    from sparselens.data.factory import training_data
    from sparselens.data.sites import Sites
    from sparselens.training.config import CheckpointConfig, LogConfig, TrainConfig
    from sparselens.training.trainer import Trainer

    torch.set_num_threads(2)
    cache = ActivationCache.open(spec["cache"])
    cfg = TrainConfig(architecture="topk", n_latents=spec["n_latents"],
                      hookpoint=cache.hookpoints[0], n_tokens=spec["steps"] * spec["batch"],
                      batch_size=spec["batch"], checkpoint=CheckpointConfig(every_steps=0),
                      log=LogConfig(progress=False, every_steps=10_000))
    before = peak_mb()
    data = training_data(cache, Sites.from_cache(cache, cfg), cfg.batch_size, cfg.seed)
    Trainer(cfg, data).fit()
    return {"peak_rss_mb": peak_mb(), "peak_rss_before_training_mb": before,
            "cache_tokens": cache.n_tokens, "width": cache.width(cache.hookpoints[0])}


def synthetic_cache(tokens: int) -> Path:
    """A harvest of `tokens` tokens of a random 1-block Llama at width 256 (made once)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from sparselens.data.cache import ActivationCache
    from sparselens.data.chunking import Chunk
    from sparselens.data.harvest import HarvestConfig, harvest
    from sparselens.models.source import LoadedModel, cache_dir

    folder = cache_dir() / "bench" / f"memory-llama256-{tokens}"
    try:
        return ActivationCache.open(folder).folder
    except (FileNotFoundError, ValueError):
        pass
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512,
                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=256, bos_token_id=1, eos_token_id=2)
    model = LoadedModel(LlamaForCausalLM(config).eval(), tokenizer=None, name="random-llama")
    gen = torch.Generator().manual_seed(0)
    n_chunks = tokens // 255 + 1

    def chunks():
        for index in range(n_chunks):
            ids = torch.randint(3, 512, (256,), generator=gen)
            ids[0] = 1
            yield Chunk(ids=ids, special=ids == 1, doc_id=index)

    harvest(model, chunks(), ["resid.0"], folder,
            HarvestConfig(storage_dtype="float32", shard_tokens=16384, batch_size=32,
                          max_tokens=tokens, progress=False))
    return folder


def run(spec: dict[str, Any]) -> dict[str, Any]:
    return run_isolated(spec, script=__file__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("caches", nargs="*", type=Path, help="activation cache folders")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--n-latents", type=int, default=8192)
    parser.add_argument("--out", type=Path, default=RESULTS / "train_memory.json")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    caches = args.caches or [synthetic_cache(n) for n in (65_536, 1_048_576)]
    runs = []
    for cache in caches:
        spec = {"cache": str(cache), "cache_mb": folder_mb(cache), "steps": args.steps,
                "batch": args.batch, "n_latents": args.n_latents}
        runs.append(run(spec))
    print(f"{'cache':60.60s} {'tokens':>9s} {'on disk MB':>10s} {'peak RSS MB':>12s}")
    for r in runs:
        if "error" in r:
            print(f"{r['cache']:60.60s} error: {r['error']}")
            continue
        print(f"{r['cache']:60.60s} {r['cache_tokens']:9d} {r['cache_mb']:10.0f} "
              f"{r['peak_rss_mb']:12.0f}")
    from sparselens.io.atomic import atomic_write_json

    atomic_write_json(args.out, {"runs": runs})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
