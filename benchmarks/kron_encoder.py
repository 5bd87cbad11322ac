"""KronSAE's encoder cost against TopK's, at widths where the factorisation matters.

The paper (Kurochkin et al. 2025) claims the encoder costs O(h(m+n)d) instead of O(Fd). The
encoder here is x -> the k active latents (values and indices), the part both inference and
the training selection need. Four paths, on random weights of the right shapes (the cost does
not depend on training):

- ``topk``: the dense GEMM to all F pre-activations, then top-k over F (a TopK SAE).
- ``kron_dense_old``: the first KronSAE encoder of wave 2 (mAND with several element-wise
  passes over the (B, F) latents, then top-k over F), kept here as the reference it was.
- ``kron_dense``: `KronSAE.pre_acts` (mAND as one multiply of the factor roots) + top-k over F.
- ``kron_sparse``: `KronSAE.top_latents`, which never forms the F latents (top-k over
  h·m·min(k, n) candidates).
- ``topk_gemm`` and ``kron_gemm``: the GEMMs alone (x -> F pre-activations; x -> the h(m+n)
  factors), to separate the part the factorisation shrinks from the selection.

FLOPs are counted analytically (2 per multiply-add of the GEMMs, 1 per product of mAND).
Timings: median of `--repeats` (the paths take turns in every repeat), one thread (the
machine is shared; one thread is the least disturbed measurement), with the load average
recorded. Writes
``benchmarks/results/kron_encoder.json``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from sparselens.dictionaries import build
from sparselens.io.atomic import atomic_write_json

RESULTS = Path(__file__).parent / "results"


def old_mand(p: Tensor, q: Tensor) -> Tensor:
    """The wave-2 mAND (the reference this benchmark compares against)."""
    p, q = p.unsqueeze(-1), q.unsqueeze(-2)
    both = (p > 0) & (q > 0)
    product = torch.where(both, p * q, torch.zeros((), dtype=p.dtype))
    return torch.where(both, product.clamp_min(1e-12).sqrt(), product)


def median_seconds(paths: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median time of each path; the paths take turns within every repeat, so a change of
    the machine's load during the measurement hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    for fn in paths.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in paths.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


@torch.no_grad()
def measure(d: int, n_latents: int, tokens: int, k: int, base: int, compose: int,
            repeats: int) -> dict[str, object]:
    torch.manual_seed(0)
    topk = build("topk", d_in=d, n_latents=n_latents, k=k)
    kron = build("kronsae", d_in=d, n_latents=n_latents, k=k, base=base, compose=compose)
    x = torch.randn(tokens, d)
    h = kron.cfg.heads

    def kron_old() -> object:
        p, q = kron.factors(x)
        return old_mand(p, q).flatten(-3).topk(k, dim=-1, sorted=False)

    paths = {
        "topk": lambda: topk.pre_acts(x).topk(k, dim=-1, sorted=False),
        "kron_dense_old": kron_old,
        "kron_dense": lambda: kron.pre_acts(x).topk(k, dim=-1, sorted=False),
        "kron_sparse": lambda: kron.top_latents(x),
    }
    # the GEMM alone (the part the factorisation shrinks), for the breakdown
    paths["topk_gemm"] = lambda: topk.pre_acts(x)
    paths["kron_gemm"] = lambda: kron.factors(x)
    seconds = median_seconds(paths, repeats)
    r = min(k, compose)
    flops = {"topk": 2 * tokens * d * n_latents,
             "kron_dense": 2 * tokens * d * h * (base + compose) + tokens * n_latents,
             "kron_sparse": 2 * tokens * d * h * (base + compose) + tokens * h * base * r}
    # same values as TopK over the dense latents (the check that the fast path is exact)
    dense_values = kron.pre_acts(x).topk(k, dim=-1).values
    sparse_values = kron.top_latents(x)[0].sort(dim=-1, descending=True).values
    return {"d": d, "n_latents": n_latents, "tokens": tokens, "k": k, "base": base,
            "compose": compose, "heads": h, "seconds": seconds,
            "ratio_to_topk": {n: s / seconds["topk"] for n, s in seconds.items()},
            "flops": flops, "flop_ratio_to_topk": {n: f / flops["topk"] for n, f in flops.items()},
            "encoder_weights_ratio": h * (base + compose) / n_latents,
            "sparse_equals_dense": bool(torch.allclose(dense_values, sparse_values)),
            "load_average": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["640x4096", "640x32768", "2304x32768"],
                        help="d x F pairs")
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--base", type=int, default=4)
    parser.add_argument("--compose", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "kron_encoder.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    print(f"{'d':>5s} {'F':>6s} {'topk ms':>8s} {'old ms':>8s} {'dense ms':>8s} "
          f"{'sparse ms':>9s} {'sparse/topk':>11s} {'FLOPs sparse/topk':>17s}  load")
    for size in args.sizes:
        d, n_latents = (int(v) for v in size.split("x"))
        row = measure(d, n_latents, args.tokens, args.k, args.base, args.compose, args.repeats)
        rows.append(row)
        s = row["seconds"]
        print(f"{d:5d} {n_latents:6d} {1e3 * s['topk']:8.1f} {1e3 * s['kron_dense_old']:8.1f} "
              f"{1e3 * s['kron_dense']:8.1f} {1e3 * s['kron_sparse']:9.1f} "
              f"{row['ratio_to_topk']['kron_sparse']:11.2f} "
              f"{row['flop_ratio_to_topk']['kron_sparse']:17.3f}  "
              f"{row['load_average'][0]:.1f}", flush=True)
        atomic_write_json(args.out, {"threads": args.threads, "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
