"""JumpReLU (target L0 = k) against TopK at matched L0, at several training lengths.

Wave 2 found JumpReLU's FVU above TopK's after 80 steps; is that a short-training artefact?
Trains TopK (k) and JumpReLU (target L0 k) from one read of the data (`family.train_group`)
for each number of steps and measures held-out FVU and L0. ``--ablations`` adds JumpReLU runs
with other settings (a JSON object per run, e.g. the defaults before issue 21's fix:
``'{"pre_encoder_bias": false, "target_coef": 10, "target_integral": 0}'``). Writes
``benchmarks/results/jumprelu_steps.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from family import SMALL, train_group
from sparselens.data.cache import ActivationCache
from sparselens.evaluation.reconstruction import reconstruction_metrics
from sparselens.io.atomic import atomic_write_json

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--hookpoint", default="resid.6")
    parser.add_argument("--steps", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--n-latents", type=int, default=256)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--ablations", nargs="*", default=[], type=json.loads,
                        help="extra JumpReLU settings, one JSON object each")
    parser.add_argument("--out", type=Path, default=RESULTS / "jumprelu_steps.json")
    args = parser.parse_args()
    cache = ActivationCache.open(args.cache, allow_incomplete=True)
    runs = []
    for steps in args.steps:
        sizes = dataclasses.replace(SMALL, n_latents=args.n_latents, batch_size=args.batch_size,
                                    train_tokens=args.batch_size * steps)
        members = [("topk", {"k": args.k}), ("jumprelu", {"k": args.k})] + [
            ("jumprelu", {"k": args.k, **extra}) for extra in args.ablations]
        for (name, settings), (dictionary, seconds) in zip(
                members, train_group(members, cache, args.hookpoint, sizes)):
            assert dictionary is not None, f"{name} diverged"
            batches = cache.batches(args.batch_size, hookpoints=[args.hookpoint],
                                    split="heldout", shuffle=False)
            recon = reconstruction_metrics(dictionary, batches, args.hookpoint)
            runs.append({"variant": name, "settings": settings, "steps": steps,
                         "fvu": recon["fvu"], "l0": recon["l0"],
                         "dead_fraction": recon["dead_fraction"], "train_seconds": seconds,
                         "load_average": os.getloadavg()})
            print(runs[-1], flush=True)
            atomic_write_json(args.out, {"command": " ".join(sys.argv),
                                         "cache_train_tokens": cache.n_rows("train"),
                                         "hookpoint": args.hookpoint, "n_latents": args.n_latents,
                                         "k": args.k, "batch_size": args.batch_size,
                                         "runs": runs})


if __name__ == "__main__":
    main()
