"""Fel et al.'s stability claim: archetypal dictionaries agree across seeds far more than TopK.

Trains TopK and the relaxed Archetypal SAE (`archetypal`, its default δ) with two training
seeds each on the same activation cache (the seed changes the initialisation, the
initialisation sample and the order of the batches; the data are the same), then matches the
two decoders of each architecture one-to-one (`evaluation.consistency`: Hungarian matching of
decoder cosines, PW-MCC, the fraction of pairs above 0.7, quantiles). Two random unit
dictionaries of the same shape give the chance level. Both architectures of one seed train
from one read of the data (`family.train_group`).

Writes ``benchmarks/results/archetypal_stability.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import torch

from family import SMALL, train_group
from sparselens.data.cache import ActivationCache
from sparselens.evaluation.consistency import consistency_metrics
from sparselens.evaluation.reconstruction import reconstruction_metrics
from sparselens.io.atomic import atomic_write_json

RESULTS = Path(__file__).parent / "results"
ARCHITECTURES = ("topk", "archetypal")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--hookpoint", default="resid.6")
    parser.add_argument("--n-latents", type=int, default=1024)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--train-tokens", type=int, default=40_960)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--seeds", type=int, nargs=2, default=[0, 1])
    parser.add_argument("--out", type=Path, default=RESULTS / "archetypal_stability.json")
    args = parser.parse_args()
    cache = ActivationCache.open(args.cache, allow_incomplete=True)
    sizes = dataclasses.replace(SMALL, n_latents=args.n_latents, train_tokens=args.train_tokens,
                                batch_size=args.batch_size)
    started = time.perf_counter()
    decoders: dict[str, list[torch.Tensor]] = {a: [] for a in ARCHITECTURES}
    quality: dict[str, list[dict[str, float]]] = {a: [] for a in ARCHITECTURES}
    for seed in args.seeds:
        members = [(a, {"k": args.k}) for a in ARCHITECTURES]
        trained = train_group(members, cache, args.hookpoint, sizes, seed=seed)
        for (name, _), (dictionary, seconds) in zip(members, trained):
            assert dictionary is not None, f"{name} seed {seed} diverged"
            with dictionary.evaluating():
                decoders[name].append(dictionary.W_dec.detach().float().cpu().clone())
            batches = cache.batches(sizes.batch_size, hookpoints=[args.hookpoint],
                                    split="heldout", shuffle=False)
            recon = reconstruction_metrics(dictionary, batches, args.hookpoint)
            quality[name].append({"seed": seed, "fvu": recon["fvu"], "l0": recon["l0"],
                                  "dead_fraction": recon["dead_fraction"],
                                  "train_seconds": seconds})
            print(f"{name} seed {seed}: FVU {recon['fvu']:.3f}, L0 {recon['l0']:.1f}", flush=True)
    result: dict[str, Any] = {"hookpoint": args.hookpoint, "n_latents": args.n_latents,
                              "k": args.k, "train_tokens": args.train_tokens,
                              "batch_size": args.batch_size, "seeds": args.seeds,
                              "cache_train_tokens": cache.n_rows("train"),
                              "cache_heldout_tokens": cache.n_rows("heldout")}
    for name in ARCHITECTURES:
        result[name] = {"runs": quality[name], **consistency_metrics(*decoders[name])}
    gen = torch.Generator().manual_seed(0)
    shape = decoders["topk"][0].shape
    result["random"] = consistency_metrics(torch.randn(shape, generator=gen),
                                           torch.randn(shape, generator=gen))
    result["claim"] = ("Fel et al. 2025: archetypal dictionaries are far more stable across "
                       "seeds than TopK's")
    result["claim_holds"] = bool(result["archetypal"]["pw_mcc"] > result["topk"]["pw_mcc"])
    result["wall_seconds"] = time.perf_counter() - started
    result["load_average"] = os.getloadavg()
    print(f"{'':12s} {'PW-MCC':>7s} {'>0.7':>6s} {'median':>7s} {'q10':>6s} {'q90':>6s}")
    for name in (*ARCHITECTURES, "random"):
        r = result[name]
        q = r["matched_cosine_quantiles"]
        print(f"{name:12s} {r['pw_mcc']:7.3f} {r['fraction_matched']:6.3f} {q['0.5']:7.3f} "
              f"{q['0.1']:6.3f} {q['0.9']:6.3f}")
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
