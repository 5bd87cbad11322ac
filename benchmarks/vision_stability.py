"""Archetypal SAE stability across seeds on ViT patch activations (Fel et al. 2025's claim,
on the embedded ViT-S/14 with the DINOv2 architecture).

Trains two seeds each of an Archetypal (relaxed, delta=1) and a TopK SAE with the same width,
k and token budget on one patch cache (``sparselens harvest-images``), then matches each
pair's decoder rows one-to-one (``evaluation.consistency``: Hungarian matching on cosine) and
reports the mean matched cosine (PW-MCC), the fraction matched above 0.7, quantiles, and each
run's held-out FVU. Writes the ``stability`` entry of ``benchmarks/results/vision.json``
(other entries kept). Timings beside ``os.getloadavg()``: the machine may be shared.
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
from sparselens.evaluation import reconstruction_metrics
from sparselens.evaluation.consistency import consistency_metrics, pairwise_consistency
from sparselens.pipelines.train import train_on_cache
from sparselens.training.config import LogConfig, TrainConfig

RESULTS = Path(__file__).parent / "results" / "vision.json"


def random_baseline(latents: int, width: int) -> dict:
    """Matched-cosine statistics of two independent Gaussian dictionaries of this shape: the
    floor a pair of unrelated dictionaries reaches by optimal matching alone."""
    gen = torch.Generator().manual_seed(0)
    return consistency_metrics(torch.randn(latents, width, generator=gen),
                               torch.randn(latents, width, generator=gen))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("cache", type=Path, help="a patch cache from harvest-images")
    parser.add_argument("--hookpoint", default="resid.6")
    parser.add_argument("--latents", type=int, default=3072)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--train-tokens", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--architectures", nargs="+", default=["archetypal", "topk"])
    parser.add_argument("--init-tokens", type=int, default=16384,
                        help="rows for the data-dependent init (Archetypal: k-means points)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cache = ActivationCache.open(args.cache)
    heldout = list(cache.batches(4096, [args.hookpoint], split="heldout", shuffle=False))
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.architectures:
            decoders = {}
            for seed in args.seeds:
                cfg = TrainConfig(architecture=arch, n_latents=args.latents,
                                  dictionary={"k": args.k}, n_tokens=args.train_tokens,
                                  batch_size=1024, seed=seed, hookpoint=args.hookpoint,
                                  init_tokens=args.init_tokens,
                                  log=LogConfig(progress=False))
                start = time.perf_counter()
                result = train_on_cache(cfg, cache, Path(tmp) / f"{arch}-{seed}")
                seconds = time.perf_counter() - start
                metrics = reconstruction_metrics(result.dictionary, heldout, args.hookpoint)
                decoders[f"seed{seed}"] = result.dictionary.W_dec.detach().float().cpu()
                runs.setdefault(arch, {"runs": []})["runs"].append(
                    {"seed": seed, "train_seconds": round(seconds, 1),
                     "load_average": [round(v, 2) for v in os.getloadavg()],
                     "heldout_fvu": round(metrics["fvu"], 4),
                     "heldout_l0": round(metrics["l0"], 2)})
                print(f"{arch} seed {seed}: {seconds:.0f} s, held-out FVU {metrics['fvu']:.4f}",
                      flush=True)
            runs[arch]["consistency"] = pairwise_consistency(decoders)
    record = {"cache": str(args.cache), "source": cache.manifest["corpus"].get("source"),
              "images": cache.n_sequences, "train_rows": cache.n_rows("train"),
              "hookpoint": args.hookpoint, "latents": args.latents, "k": args.k,
              "train_tokens": args.train_tokens, "init_tokens": args.init_tokens,
              "seeds": args.seeds,
              "threads": torch.get_num_threads(), "architectures": runs,
              "random_baseline": random_baseline(args.latents, heldout[0].acts[
                  args.hookpoint].shape[1])}
    saved = json.loads(args.out.read_text()) if args.out.is_file() else {}
    before = saved.get("stability") or {}
    ignored = ("architectures", "threads", "random_baseline")
    same = {k: v for k, v in before.items() if k not in ignored} == \
        {k: v for k, v in record.items() if k not in ignored}
    if same:  # another invocation with the same settings ran other architectures: merge
        record["architectures"] = {**before["architectures"], **runs}
    saved["stability"] = record
    args.out.write_text(json.dumps(saved, indent=2) + "\n")
    print("| architecture | PW-MCC (mean matched cosine) | matched > 0.7 | median | FVU |")
    for arch, entry in runs.items():
        pair = entry["consistency"]["pairs"][0]
        fvus = ", ".join(str(r["heldout_fvu"]) for r in entry["runs"])
        print(f"| {arch} | {pair['pw_mcc']:.3f} | {pair['fraction_matched']:.3f} | "
              f"{pair['matched_cosine_quantiles']['0.5']:.3f} | {fvus} |")


if __name__ == "__main__":
    main()
