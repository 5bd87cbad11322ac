"""Every registered architecture on synthetic ground truth: how many true features it recovers.

Data: `SyntheticConfig()` defaults (64 dimensions, 256 true features in superposition, power-law
frequencies, correlated pairs, a parent/child hierarchy; see docs/evaluation.md). Each variant
trains with the library's Trainer (512 latents, 2M tokens, batches of 2048) at its sparsity
setting for L0 ≈ k (k = 5, the nearest integer above the true mean L0 of about 4.2; k-sparse
variants get k, the others the settings of benchmarks/family.py, so their L0 is whatever
training gives and the table reports it). Scored on 20k fresh tokens: mean max cosine,
fraction of true features recovered above 0.9 cosine, absorption of parents by children.

Writes ``benchmarks/results/synthetic_recovery.json``. ``--quick``: 300k tokens, to check that
the script runs. Timings on a shared 2-core machine are only indicative.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from family import FAMILY, level_settings
from sparselens.evaluation.synthetic import (
    SyntheticConfig,
    SyntheticFeatures,
    score_synthetic,
    train_synthetic,
)
from sparselens.io.atomic import atomic_write_json

RESULTS = Path(__file__).parent / "results"
K = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--variants", nargs="+", default=list(FAMILY))
    parser.add_argument("--tokens", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="results JSON path")
    args = parser.parse_args()
    n_tokens = args.tokens or (300_000 if args.quick else 2_000_000)
    features = SyntheticFeatures(SyntheticConfig())
    runs: list = []
    out = args.out or RESULTS / ("synthetic_recovery_quick.json" if args.quick
                                 else "synthetic_recovery.json")
    print(f"{'variant':15s} {'L0':>6s} {'FVU':>6s} {'MMCS':>6s} {'>0.9':>6s} {'absorb':>7s} "
          f"{'sec':>6s}", flush=True)
    for name in args.variants:
        settings = level_settings(name, K, 0)
        torch.manual_seed(0)
        start = time.perf_counter()
        try:
            dictionary = train_synthetic(features, name, settings, n_latents=512,
                                         n_tokens=n_tokens, batch_size=2048)
        except Exception as error:  # one variant failing must not lose the others' results
            runs.append({"variant": name, "settings": settings, "error": repr(error)})
            print(f"{name:15s} failed: {error!r}", flush=True)
            write(out, features, n_tokens, runs)
            continue
        seconds = time.perf_counter() - start
        score = score_synthetic(features, dictionary)
        absorption = score["absorption"]
        runs.append({"variant": name, "settings": settings, "train_seconds": seconds, **score})
        mean_abs = absorption["mean_absorption"]
        print(f"{name:15s} {score['l0']:6.2f} {score['fvu']:6.3f} {score['mean_max_cosine']:6.3f} "
              f"{score['fraction_recovered']:6.3f} "
              f"{mean_abs if mean_abs is not None else float('nan'):7.3f} {seconds:6.1f}",
              flush=True)
        write(out, features, n_tokens, runs)  # after every variant: a cut-off run keeps its rows
    print(f"wrote {out}")


def write(out: Path, features: SyntheticFeatures, n_tokens: int, runs: list) -> None:
    atomic_write_json(out, {"config": SyntheticConfig().__dict__, "k": K, "n_latents": 512,
                            "n_tokens": n_tokens, "expected_l0": features.expected_l0,
                            "runs": runs})


if __name__ == "__main__":
    main()
