"""Every variant at its default settings on every residual hookpoint: is FVU well below 1?

Issue 21 asks that every variant reach FVU well below 1 on every residual hookpoint of the
embedded model (gemma-3-270m: resid.0 .. resid.17, several with massive-norm tokens) at
default settings, and that no run finish above 1 silently. This trains, per hookpoint, every
registered variant of `family.FAMILY` with nothing but the width, token budget and batch size
set (each variant's own defaults otherwise: k = 32 for the k-sparse ones, the default λ for
the penalty ones), all from one read of the data (`family.train_group`), and measures
held-out FVU, L0, the massive-token FVU and the `fvu_above_one` flag with its warning.

Short budget on purpose (the machine is shared): the table says how short. The JSON is written
after every hookpoint and `--resume` continues an interrupted run. Writes
``benchmarks/results/family_hookpoints.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from family import FAMILY, SMALL, train_group
from sparselens.data.cache import ActivationCache
from sparselens.dictionaries import REGISTRY
from sparselens.evaluation.reconstruction import reconstruction_metrics
from sparselens.io.atomic import atomic_write_json

RESULTS = Path(__file__).parent / "results"


def evaluate(dictionary: Any, cache: ActivationCache, hookpoint: str,
             batch_size: int) -> dict[str, Any]:
    batches = cache.batches(batch_size, hookpoints=[hookpoint], split="heldout",
                            shuffle=False)
    recon = reconstruction_metrics(dictionary, batches, hookpoint)
    for warning in recon["warnings"]:
        print(f"WARNING: {dictionary.architecture} at {hookpoint}: {warning}", flush=True)
    keep = ("l0", "fvu", "fvu_above_one", "warnings", "dead_fraction")
    return {k: recon[k] for k in keep}


def print_table(runs: list[dict[str, Any]], hookpoints: list[str],
                variants: list[str]) -> None:
    by = {(r["variant"], r["hookpoint"]): r for r in runs}
    print(f"{'variant':15s}" + "".join(f"{h.split('.')[-1]:>6s}" for h in hookpoints)
          + "   max FVU")
    for name in variants:
        cells, worst = [], None
        for h in hookpoints:
            r = by.get((name, h))
            if r is None:
                cells.append(f"{'-':>6s}")
                continue
            cells.append(f"{r['fvu']:6.2f}" + ("!" if r["fvu_above_one"] else ""))
            worst = r["fvu"] if worst is None else max(worst, r["fvu"])
        print(f"{name:15s}" + "".join(cells) + (f"   {worst:.3f}" if worst is not None else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, required=True,
                        help="activation cache holding the residual hookpoints")
    parser.add_argument("--hookpoints", nargs="+", default=None,
                        help="default: every resid.* hookpoint of the cache")
    parser.add_argument("--variants", nargs="+", default=list(FAMILY), choices=sorted(REGISTRY))
    parser.add_argument("--n-latents", type=int, default=512)
    parser.add_argument("--train-tokens", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=RESULTS / "family_hookpoints.json")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    cache = ActivationCache.open(args.cache, allow_incomplete=True)
    hookpoints = args.hookpoints or sorted(
        (h for h in cache.hookpoints if h.startswith("resid.")),
        key=lambda h: int(h.split(".")[-1]))
    sizes = dataclasses.replace(SMALL, n_latents=args.n_latents, train_tokens=args.train_tokens,
                                batch_size=args.batch_size)
    runs: list[dict[str, Any]] = []
    if args.resume and args.out.exists():
        runs = json.loads(args.out.read_text())["runs"]
    done = {(r["variant"], r["hookpoint"]) for r in runs}
    started = time.perf_counter()
    for hookpoint in hookpoints:
        members = [(name, {}) for name in args.variants if (name, hookpoint) not in done]
        if not members:
            continue
        begin = time.perf_counter()
        trained = train_group(members, cache, hookpoint, sizes)
        for (name, _), (dictionary, seconds) in zip(members, trained):
            if dictionary is None:
                runs.append({"variant": name, "hookpoint": hookpoint, "fvu": float("nan"),
                             "fvu_above_one": True, "failed": "non-finite loss"})
                continue
            metrics = evaluate(dictionary, cache, hookpoint, sizes.batch_size)
            runs.append({"variant": name, "hookpoint": hookpoint, "train_seconds": seconds,
                         **metrics})
        print(f"{hookpoint}: {len(members)} variants in {time.perf_counter() - begin:.0f} s "
              f"(load {os.getloadavg()[0]:.1f}); max FVU "
              f"{max(r['fvu'] for r in runs if r['hookpoint'] == hookpoint):.3f}", flush=True)
        atomic_write_json(args.out, {
            "model": "gemma-3-270m", "cache": str(args.cache), "hookpoints": hookpoints,
            "cache_train_tokens": cache.n_rows("train"),
            "cache_heldout_tokens": cache.n_rows("heldout"),
            "n_latents": sizes.n_latents, "train_tokens": sizes.train_tokens,
            "batch_size": sizes.batch_size, "settings": "each variant's defaults",
            "runs": runs, "any_fvu_above_one": any(r["fvu_above_one"] for r in runs),
            "wall_seconds": time.perf_counter() - started, "load_average": os.getloadavg()})
    print_table(runs, hookpoints, args.variants)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
