"""Matching two large dictionaries (time, peak memory), and ITDA against training an SAE.

    python benchmarks/compare.py                       # matching at 4k, 16k and 65,536 latents
    python benchmarks/compare.py --itda CACHE          # also ITDA vs a TopK SAE on CACHE
    python benchmarks/compare.py --sizes 0 --itda CACHE    # only ITDA vs SAE

**Matching.** Two decoders of width d = 640 (gemma-3-270m's): A random unit rows, B a noisy
permutation of A (cosine about 0.8 to its twin) with a fifth of its rows replaced by fresh
random ones (latents one seed found and the other did not). Each size runs in a fresh
interpreter (so peak RSS, VmHWM, is its own) with 2 threads, timing the candidate search
(blocked ``A @ B.T`` with running top-k per row and column) and the solver
(min_weight_full_bipartite_matching on the candidate graph, then the exact re-match of the
leftover latents that had no candidate partner) apart; at 4,096 latents the dense
exact solver (linear_sum_assignment) runs too, as a reference for the sparse one's PW-MCC.

**ITDA vs SAE.** On the first `--tokens` training rows of a cache: the time to build an ITDA
dictionary at each threshold, and the time to train a TopK SAE (4,096 latents, k = 32) on the
same rows for one epoch; both then reconstruct held-out rows (FVU). Writes
``benchmarks/results/compare.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import run_isolated  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def peak_mb() -> float:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM:")).split()[1]) / 1024


def decoders(n: int, d: int, seed: int = 0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=gen)
    a /= a.norm(dim=1, keepdim=True)
    b = a[torch.randperm(n, generator=gen)] + 0.025 * torch.randn(n, d, generator=gen)
    fresh = torch.rand(n, generator=gen) < 0.2
    b[fresh] = torch.randn(int(fresh.sum()), d, generator=gen)
    return a, b


def match_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from sparselens.evaluation.candidates import decoder_candidates, use_bfloat16
    from sparselens.evaluation.matching import (
        cosine_block,
        cosine_pairs,
        match_decoders,
        match_graph,
        unit_rows,
    )

    torch.set_num_threads(2)
    a, b = decoders(spec["n"], spec["d"])
    before = peak_mb()
    out: dict[str, Any] = {}
    if spec["solver"] == "exact":
        start = time.perf_counter()
        m = match_decoders(a, b, exact_limit=10**12)
        out["total_s"] = time.perf_counter() - start
    else:
        start = time.perf_counter()
        precision = {"auto": None, "bfloat16": True, "float32": False}[spec["precision"]]
        rows, cols, best_a, best_b = decoder_candidates(unit_rows(a), unit_rows(b), spec["k"],
                                                        bfloat16=precision)
        out["bfloat16_search"] = (use_bfloat16(torch.device("cpu")) if precision is None
                                  else precision)
        out["candidates_s"] = time.perf_counter() - start
        mid = time.perf_counter()
        m = match_graph(a.shape[0], b.shape[0], rows, cols, cosine_pairs(a, b), best_a, best_b,
                        "decoder_cosine", cosine_block(a, b))
        out["solver_s"] = time.perf_counter() - mid
        out["total_s"] = time.perf_counter() - start
        out["edges"] = int(rows.size)
    return {**out, "pwmcc": m.pwmcc, "upper_bound": m.upper_bound,
            "fraction_above_0.7": m.fraction_above(0.7), "peak_rss_mb": peak_mb(),
            "peak_rss_before_mb": before}


def heldout_fvu(held: Any, recon: Any) -> float:
    """Fraction of the held-out rows' variance the reconstruction leaves unexplained."""
    return float((held - recon).pow(2).sum() / (held - held.mean(0)).pow(2).sum())


def timed_itda(x: Any, seq: Any, pos: Any, k: int, threshold: float, batch_size: int
               ) -> tuple[Any, float]:
    """An ITDA dictionary built from the rows of `x` in batches, and the seconds it took."""
    from sparselens.comparison.itda import build_itda

    start = time.perf_counter()
    itda = build_itda(((x[i:i + batch_size], seq[i:i + batch_size], pos[i:i + batch_size])
                       for i in range(0, x.shape[0], batch_size)), k=k, threshold=threshold)
    return itda, time.perf_counter() - start


def timed_topk(x: Any, seq: Any, pos: Any, hookpoint: str, n_latents: int, k: int,
               batch_size: int) -> tuple[Any, float]:
    """A TopK SAE trained one pass over the whole batches of `x` with the library's Trainer
    (no checkpoints, no progress bar), in eval mode, and the seconds it took: what ITDA's
    build time is compared with (here and in itda_models.py)."""
    from sparselens.data.batch import ActivationBatch
    from sparselens.training.config import CheckpointConfig, LogConfig, OptimConfig, TrainConfig
    from sparselens.training.trainer import Trainer

    def data(skip: int):
        for i in range(skip * batch_size, x.shape[0] - batch_size + 1, batch_size):
            rows = slice(i, i + batch_size)
            yield ActivationBatch({hookpoint: x[rows]}, seq[rows], seq[rows], pos[rows])

    cfg = TrainConfig(architecture="topk", n_latents=n_latents, dictionary={"k": k},
                      hookpoint=hookpoint, n_tokens=x.shape[0] // batch_size * batch_size,
                      batch_size=batch_size, checkpoint=CheckpointConfig(every_steps=0),
                      optim=OptimConfig(), log=LogConfig(progress=False, every_steps=10_000))
    start = time.perf_counter()
    trainer = Trainer(cfg, data)
    trainer.fit()
    return trainer.dictionary.eval(), time.perf_counter() - start


def itda_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from sparselens.data.cache import ActivationCache

    torch.set_num_threads(2)
    cache = ActivationCache.open(spec["cache"])
    hookpoint = cache.hookpoints[0]
    rows = []
    for batch in cache.batches(4096, hookpoints=[hookpoint], split="train", shuffle=False):
        rows.append(batch)
        if sum(len(r) for r in rows) >= spec["tokens"]:
            break
    x = torch.cat([r.acts[hookpoint] for r in rows])[: spec["tokens"]]
    seq = torch.cat([r.seq_ids for r in rows])[: spec["tokens"]]
    pos = torch.cat([r.positions for r in rows])[: spec["tokens"]]
    held = next(cache.batches(4096, hookpoints=[hookpoint], split="heldout", shuffle=False))
    xh = held.acts[hookpoint]

    itdas = []
    for threshold in spec["thresholds"]:
        itda, seconds = timed_itda(x, seq, pos, spec["k"], threshold, spec["itda_batch"])
        itdas.append({"threshold": threshold, "seconds": seconds, "atoms": itda.n_atoms,
                      "fvu": heldout_fvu(xh, itda.encode(xh) @ itda.atoms)})
    sae, sae_s = timed_topk(x, seq, pos, hookpoint, spec["n_latents"], spec["k"], 1024)
    with torch.no_grad():
        sae_fvu = heldout_fvu(xh, sae(xh))
    return {"tokens": int(x.shape[0]), "hookpoint": hookpoint, "itda": itdas, "sae_s": sae_s,
            "sae_latents": spec["n_latents"], "sae_fvu": sae_fvu, "k": spec["k"],
            "heldout_tokens": int(xh.shape[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 65536])
    parser.add_argument("--d", type=int, default=640)
    parser.add_argument("--k", type=int, default=16, help="candidates per latent")
    parser.add_argument("--precision", choices=["auto", "bfloat16", "float32"], default="auto",
                        help="candidate search GEMM (auto: bfloat16 where it is native)")
    parser.add_argument("--itda", help="activation cache for the ITDA vs SAE comparison")
    parser.add_argument("--tokens", type=int, default=32768)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 0.03, 0.01],
                        help="ITDA relative-error thresholds to build with")
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        worker = itda_worker if spec["kind"] == "itda" else match_worker
        print(json.dumps(worker(spec)))
        return
    runs = []
    for n in args.sizes if args.sizes != [0] else []:
        for solver in (["exact", "sparse"] if n <= 4096 else ["sparse"]):
            result = run_isolated({"kind": "match", "n": n, "d": args.d, "k": args.k,
                                   "solver": solver, "precision": args.precision}, __file__)
            runs.append(result)
            print(f"n={n:6d} {solver:6s} " + ("error: " + result["error"] if "error" in result
                  else f"total {result['total_s']:8.1f} s  candidates "
                       f"{result.get('candidates_s', float('nan')):7.1f} s  solver "
                       f"{result.get('solver_s', float('nan')):6.1f} s  peak "
                       f"{result['peak_rss_mb']:7.0f} MB  PW-MCC {result['pwmcc']:.4f} "
                       f"(bound {result['upper_bound']:.4f})"), flush=True)
    record: dict[str, Any] = {"machine": "2 cores, shared with other jobs"}
    suffix = "" if args.precision == "auto" else f"_{args.precision}"
    if runs:
        record["matching" + suffix] = runs
        record["matching_run" + suffix] = {"command": "python " + " ".join(sys.argv),
                                  "date": datetime.now(UTC).isoformat(timespec="seconds"),
                                  "loadavg_end": os.getloadavg()}
    previous = RESULTS / "compare.json"
    if previous.exists():  # keep the other part of an earlier run
        record = {**json.loads(previous.read_text()), **record}
    if args.itda:
        result = run_isolated({"kind": "itda", "cache": args.itda, "tokens": args.tokens,
                               "k": 32, "thresholds": args.thresholds, "itda_batch": 256,
                               "n_latents": 4096}, __file__)
        record["itda_vs_sae"] = result
        print(json.dumps(result, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compare.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
