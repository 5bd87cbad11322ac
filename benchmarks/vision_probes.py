"""Linear probes on the rendered offline sets (``builtin:glyphs``: 26 letters; ``builtin:fonts``:
5 type families), harder than scikit-learn's digits, on the embedded ViT-S/14.

For each set: harvest the first `--images` pictures (balanced: labels cycle through the
classes) at `--size` px and one hookpoint, probe the labels from mean patch activations on the
cache's held-out images (whole images), train a TopK SAE on the training patches and probe its
mean codes too, and (as a floor) probe the raw pixels of the same split. Writes the ``probes``
entry of ``benchmarks/results/vision.json`` (other entries kept), with ``os.getloadavg()``.
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
from sparselens.data.image_harvest import harvest_images, model_transform
from sparselens.data.images import image_source
from sparselens.evaluation.image_probing import class_counts, linear_probe, probe_cache
from sparselens.models.vision import load_vision_model
from sparselens.pipelines.train import train_on_cache
from sparselens.training.config import LogConfig, TrainConfig

RESULTS = Path(__file__).parent / "results" / "vision.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sets", nargs="+", default=["glyphs", "fonts"])
    parser.add_argument("--images", type=int, default=520, help="per set")
    parser.add_argument("--size", type=int, default=112, help="8 x 8 patches of 14 px")
    parser.add_argument("--hookpoint", default="resid.6")
    parser.add_argument("--heldout", type=float, default=0.25)
    parser.add_argument("--latents", type=int, default=1536)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--train-tokens", type=int, default=40_000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    loaded = load_vision_model()
    transform = model_transform(loaded, args.size)
    results = {}
    for name in args.sets:
        records = image_source(f"builtin:{name}")[:args.images]
        with tempfile.TemporaryDirectory() as tmp:
            load_before = [round(v, 2) for v in os.getloadavg()]
            start = time.perf_counter()
            harvest_images(loaded, records, [args.hookpoint], Path(tmp) / "cache", args.size,
                           HarvestConfig(batch_size=16, heldout_fraction=args.heldout,
                                         progress=False), source=f"builtin:{name}")
            harvest_s = time.perf_counter() - start
            cache = ActivationCache.open(Path(tmp) / "cache")
            cfg = TrainConfig(architecture="topk", n_latents=args.latents,
                              dictionary={"k": args.k}, n_tokens=args.train_tokens,
                              batch_size=1024, log=LogConfig(progress=False))
            sae = train_on_cache(cfg, cache, Path(tmp) / "sae").dictionary
            labels = torch.tensor([r.label for r in records])
            train = ~cache.is_heldout(torch.arange(len(records)))
            pixels = torch.stack([transform(r.load()).flatten() for r in records])
            results[name] = {
                "images": len(records), "size": args.size, "classes": class_counts(cache),
                "harvest_seconds": round(harvest_s, 1),
                "images_per_second": round(len(records) / harvest_s, 2),
                "load_average": [load_before, [round(v, 2) for v in os.getloadavg()]],
                "pixels": linear_probe(pixels, labels, train),
                "activations": probe_cache(cache, args.hookpoint),
                "sae_codes": probe_cache(cache, args.hookpoint, sae)}
        for part in ("pixels", "activations", "sae_codes"):
            probe = results[name][part]
            print(f"| {name} | {part} | {probe['n_train']} / {probe['n_test']} | "
                  f"{probe['accuracy']:.3f} | {probe['majority_baseline']:.3f} |", flush=True)
    record = {"hookpoint": args.hookpoint, "sae": {"latents": args.latents, "k": args.k,
                                                   "train_tokens": args.train_tokens},
              "threads": torch.get_num_threads(), "sets": results}
    saved = json.loads(args.out.read_text()) if args.out.is_file() else {}
    before = saved.get("probes") or {}
    if all(before.get(k) == record[k] for k in ("hookpoint", "sae")):  # merge other sets
        record["sets"] = {**before.get("sets", {}), **results}
    saved["probes"] = record
    args.out.write_text(json.dumps(saved, indent=2) + "\n")


if __name__ == "__main__":
    main()
