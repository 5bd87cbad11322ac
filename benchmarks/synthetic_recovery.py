"""Every registered architecture on synthetic ground truth: how many true features it recovers.

Data: `SyntheticConfig()` defaults (64 dimensions, 256 true features in superposition, power-law
frequencies, correlated pairs, a parent/child hierarchy; see docs/evaluation.md). Each variant
trains with the library's Trainer (512 latents, 2M tokens, batches of 2048) at its sparsity
setting for L0 ≈ k (k = 5, the nearest integer above the true mean L0 of about 4.2; k-sparse
variants get k, the others the settings of benchmarks/family.py, so their L0 is whatever
training gives and the table reports it). Scored on 20k fresh tokens: mean max cosine,
fraction of true features recovered above 0.9 cosine, absorption of parents by children.

Writes ``benchmarks/results/synthetic_recovery.json``. ``--quick``: 300k tokens, to check that
the script runs. ``--update``: run only ``--variants`` and replace their rows in the existing
JSON (a run cut off by a deadline is completed this way; rows keep their own provenance).
``--table``: print the table of the JSON without training. ``--parents P --children C``: a
larger hierarchy (written to ``synthetic_recovery_PxC.json``). Timings on a shared 2-core
machine are only indicative; each row records the load average when it finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
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
    parser.add_argument("--parents", type=int, default=SyntheticConfig.n_parents)
    parser.add_argument("--children", type=int, default=SyntheticConfig.children_per_parent)
    parser.add_argument("--out", type=Path, default=None, help="results JSON path")
    parser.add_argument("--update", action="store_true",
                        help="keep the other variants' rows of the existing JSON")
    parser.add_argument("--table", action="store_true", help="only print the JSON's table")
    args = parser.parse_args()
    n_tokens = args.tokens or (300_000 if args.quick else 2_000_000)
    config = dataclasses.replace(SyntheticConfig(), n_parents=args.parents,
                                 children_per_parent=args.children)
    tag = "" if config == SyntheticConfig() else f"_{args.parents}x{args.children}"
    out = args.out or RESULTS / (f"synthetic_recovery{tag}_quick.json" if args.quick
                                 else f"synthetic_recovery{tag}.json")
    if args.table:
        print_table(json.loads(out.read_text())["runs"])
        return
    features = SyntheticFeatures(config)
    runs: list = []
    if args.update and out.exists():
        runs = [r for r in json.loads(out.read_text())["runs"]
                if (r["variant"], r.get("n_tokens", 2_000_000)) not in
                {(v, n_tokens) for v in args.variants}]
    print(f"{'variant':15s} {'L0':>6s} {'FVU':>6s} {'MMCS':>6s} {'>0.9':>6s} {'absorb':>7s} "
          f"{'sec':>6s}", flush=True)
    for name in args.variants:
        settings = level_settings(name, K, 0)
        torch.manual_seed(0)
        start, cpu = time.perf_counter(), time.process_time()
        try:
            dictionary = train_synthetic(features, name, settings, n_latents=512,
                                         n_tokens=n_tokens, batch_size=2048)
        except Exception as error:  # one variant failing must not lose the others' results
            runs.append({"variant": name, "settings": settings, "error": repr(error)})
            print(f"{name:15s} failed: {error!r}", flush=True)
            write(out, features, n_tokens, runs)
            continue
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        score = score_synthetic(features, dictionary)
        runs.append({"variant": name, "settings": settings, "n_tokens": n_tokens,
                     "train_seconds": seconds, "train_cpu_seconds": cpu_seconds,
                     "loadavg": os.getloadavg(), **score})
        print_row(runs[-1])
        write(out, features, n_tokens, runs)  # after every variant: a cut-off run keeps its rows
    print()
    print_table(runs)
    print(f"wrote {out}")


def absorption_of(run: dict) -> float | None:
    """Mean parent absorption (older rows, parsed from a printed table, hold it flat)."""
    if "absorption" in run:
        return run["absorption"]["mean_absorption"]
    return run.get("mean_absorption")


def print_row(run: dict) -> None:
    if "error" in run:
        print(f"{run['variant']:15s} failed: {run['error']}")
        return
    absorbed = absorption_of(run)
    shown = f"{absorbed:7.3f}" if absorbed is not None else f"{'-':>7s}"
    tokens = run.get("n_tokens", 2_000_000) / 1e6
    print(f"{run['variant']:15s} {run['l0']:6.2f} {run['fvu']:6.3f} {run['mean_max_cosine']:6.3f} "
          f"{run['fraction_recovered']:6.3f} {shown} {run.get('train_seconds', 0):6.1f} "
          f"{tokens:5.1f}M", flush=True)


def print_table(runs: list) -> None:
    order = {name: i for i, name in enumerate(FAMILY)}
    print(f"{'variant':15s} {'L0':>6s} {'FVU':>6s} {'MMCS':>6s} {'>0.9':>6s} {'absorb':>7s} "
          f"{'sec':>6s} {'tokens':>6s}")
    for run in sorted(runs, key=lambda r: order.get(r["variant"], len(order))):
        print_row(run)


def write(out: Path, features: SyntheticFeatures, n_tokens: int, runs: list) -> None:
    previous = json.loads(out.read_text()) if out.exists() else {}
    notes = {k: previous[k] for k in ("note",) if k in previous}
    atomic_write_json(out, {**notes, "config": dataclasses.asdict(features.cfg), "k": K,
                            "n_latents": 512, "n_tokens": n_tokens,
                            "expected_l0": features.expected_l0, "runs": runs})


if __name__ == "__main__":
    main()
