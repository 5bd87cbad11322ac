"""The sparse matcher's partial matching alone, on a saved activation-correlation graph.

    python benchmarks/partial_matching.py extract SAE_A SAE_B --cache CACHE --out DIR
    python benchmarks/partial_matching.py synthetic --n 8192 --out DIR
    python benchmarks/partial_matching.py solve DIR --solvers doubled components --timeout 1800

`extract` encodes the shared (held-out) cache rows with both dictionaries, as `sparselens
compare` does, and saves both sparse codes (`codes_a.npz`, `codes_b.npz`) and the candidate
graph of `match_activations` (`graph.npz`: each latent's k most correlated co-firing partners,
both ways, with their correlations). `synthetic` writes the same files from made-up codes
(latents of B are noisy mixtures of A's, a fifth of them fresh, some latents dead). `solve`
runs each solver in a fresh interpreter (peak RSS its own; killed at --timeout):

- ``doubled``: the square doubled graph that `evaluation.matching` used before (stand-in rows
  and columns, a mirrored copy of every edge), kept here as the reference;
- ``rectangular``: `partial_matching._sparse_matching` on the whole graph (no split);
- ``components``: `partial_matching.max_weight_matching` (positive edges, components, dense
  blocks for small ones, the rectangular graph for large ones);

each with the pair bonus ``--bonus`` (a pair is worth similarity + bonus, an unmatched latent
0; `match_graph` uses 0, the doubled graph used 2). It reports the time of the partial
matching, its objective (which must agree between solvers), and the PW-MCC of the whole
`match_graph` (leftover latents re-matched densely or paired) with that solver. Results go to
``benchmarks/results/partial_matching.json`` (with the command, date and load average).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def peak_mb() -> float:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM:")).split()[1]) / 1024


def save_graph(out: Path, codes_a: Any, codes_b: Any, k: int) -> None:
    """Codes and the activation candidate graph, as `match_activations` builds it."""
    from scipy.sparse import save_npz

    from sparselens.comparison.correlation import correlation_stats

    out.mkdir(parents=True, exist_ok=True)
    save_npz(out / "codes_a.npz", codes_a)
    save_npz(out / "codes_b.npz", codes_b)
    stats = correlation_stats(codes_a, codes_b)
    rows, cols, best_a, best_b = stats.candidate_edges(k)
    edges = np.unique(rows * stats.co.shape[1] + cols)
    r, c = edges // stats.co.shape[1], edges % stats.co.shape[1]
    np.savez(out / "graph.npz", n_a=stats.co.shape[0], n_b=stats.co.shape[1], rows=r, cols=c,
             sim=stats.pairs(r, c), best_a=best_a, best_b=best_b, k=k)
    print(f"{out}: {codes_a.shape[0]} tokens, {stats.co.shape} latents, {r.size} edges")


def extract(args: argparse.Namespace) -> None:
    from sparselens.comparison.compare import shared_codes
    from sparselens.data.cache import ActivationCache
    from sparselens.io.detect import load_any

    a, b = load_any(args.a), load_any(args.b)
    cache = ActivationCache.open(args.cache)
    shared = shared_codes(a, b, cache, a.cfg.hookpoint, b.cfg.hookpoint, args.n_tokens)
    save_graph(Path(args.out), shared.codes_a, shared.codes_b, args.k)


def synthetic(args: argparse.Namespace) -> None:
    """B = A @ M + noise: each B latent a noisy copy of one A latent (a third of them mixed
    with a second A latent), a fifth of B's latents fresh (noise only), a tenth of A's dead."""
    from scipy.sparse import csc_matrix, diags
    from scipy.sparse import random as sparse_random

    rng = np.random.default_rng(args.seed)
    n, tokens = args.n, args.tokens
    density = 32 / n  # about 32 latents per token, as a TopK SAE with k = 32
    a = sparse_random(tokens, n, density=density, format="csr", rng=rng)
    a = a @ diags((rng.random(n) < 0.9) * rng.lognormal(0, 1, n))  # dead, varied scales
    cols = np.arange(n)
    twin = rng.permutation(n)
    mixed = np.flatnonzero(rng.random(n) < 1 / 3)
    fresh = rng.random(n) < 0.2
    rows = np.r_[twin, rng.integers(0, n, mixed.size)]
    mix = csc_matrix((np.r_[np.ones(n), np.full(mixed.size, 0.7)], (rows, np.r_[cols, mixed])),
                     shape=(n, n)) @ diags(~fresh * 1.0)
    noise = sparse_random(tokens, n, density=density / 2, format="csr", rng=rng)
    b = a @ mix + noise
    save_graph(Path(args.out), a.tocsr(), b.tocsr(), args.k)


def doubled(n_a: int, n_b: int, r: np.ndarray, c: np.ndarray, sim: np.ndarray, bonus: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """The earlier formulation: a min-weight full matching of the square doubled graph. Edge
    3 - sim, stand-ins `stand`, mirrored edges `mirror`: a pair is worth 2 stand - 3 - mirror
    + sim (bonus 2: stand 4, mirror 3, the weights it used)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    mirror = 1.0
    stand = (bonus + 3.0 + mirror) / 2
    ia, ib = np.arange(n_a, dtype=np.int64), np.arange(n_b, dtype=np.int64)
    graph_r = np.concatenate([r, ia, n_a + ib, n_a + c])
    graph_c = np.concatenate([c, n_b + ia, ib, n_b + r])
    weight = np.concatenate([3.0 - sim, np.full(n_a + n_b, stand), np.full(r.size, mirror)])
    n = n_a + n_b
    graph = csr_matrix((weight, (graph_r, graph_c)), shape=(n, n))
    match_r, match_c = (m.astype(np.int64) for m in min_weight_full_bipartite_matching(graph))
    real = (match_r < n_a) & (match_c < n_b)
    return match_r[real], match_c[real]


def solver(name: str, bonus: float):
    """``(n_a, n_b, r, c, sim) -> (rows, cols)`` for a solver name."""
    from sparselens.evaluation import partial_matching as pm

    def rectangular(n_a: int, n_b: int, r: np.ndarray, c: np.ndarray, sim: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        w = sim + bonus
        keep = w > 0
        if n_a <= n_b:
            return pm._sparse_matching(n_a, n_b, r[keep], c[keep], w[keep])
        cols, rows = pm._sparse_matching(n_b, n_a, c[keep], r[keep], w[keep])
        return rows, cols

    return {"doubled": lambda n_a, n_b, r, c, sim: doubled(n_a, n_b, r, c, sim, bonus),
            "rectangular": rectangular,
            "components": lambda n_a, n_b, r, c, sim: pm.max_weight_matching(
                n_a, n_b, r, c, sim + bonus)}[name]


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    from scipy.sparse import load_npz

    from sparselens.comparison.correlation import correlation_stats
    from sparselens.evaluation import matching

    folder = Path(spec["graph"])
    g = np.load(folder / "graph.npz")
    n_a, n_b, r, c, sim = int(g["n_a"]), int(g["n_b"]), g["rows"], g["cols"], g["sim"]
    solve = solver(spec["solver"], spec["bonus"])
    start = time.perf_counter()
    rows, cols = solve(n_a, n_b, r, c, sim)
    seconds = time.perf_counter() - start
    lookup = dict(zip((r * n_b + c).tolist(), sim.tolist(), strict=True))
    matched = np.array([lookup[key] for key in (rows * n_b + cols).tolist()])
    out = {"partial_s": seconds, "pairs": int(rows.size),
           "objective": float((matched + spec["bonus"]).sum()),
           "similarity_sum": float(matched.sum())}
    if not (folder / "codes_a.npz").exists():  # a decoder graph (no codes): the solver only
        return {**out, "peak_rss_mb": peak_mb()}
    stats = correlation_stats(load_npz(folder / "codes_a.npz"), load_npz(folder / "codes_b.npz"))
    matching.max_weight_matching = lambda n_a, n_b, r, c, sim: solve(n_a, n_b, r, c, sim)
    start = time.perf_counter()
    m = matching.match_graph(n_a, n_b, r, c, stats.pairs, g["best_a"], g["best_b"],
                             "activation_correlation", stats.block)
    out.update(match_graph_s=time.perf_counter() - start, pwmcc=m.pwmcc,
               upper_bound=m.upper_bound, peak_rss_mb=peak_mb())
    return out


def solve(args: argparse.Namespace) -> None:
    g = np.load(Path(args.graph) / "graph.npz")
    info = {"graph": args.graph, "n_a": int(g["n_a"]), "n_b": int(g["n_b"]),
            "edges": int(g["rows"].size), **component_sizes(g)}
    print(json.dumps(info))
    runs = []
    for bonus in args.bonus:
        for name in args.solvers:
            spec = {"graph": args.graph, "solver": name, "bonus": bonus}
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            start = time.perf_counter()
            try:
                proc = subprocess.run([sys.executable, __file__, "worker", json.dumps(spec)],
                                      capture_output=True, text=True, timeout=args.timeout,
                                      env=env)
                lines = proc.stdout.strip().splitlines()
                result = ({**spec, **json.loads(lines[-1])} if proc.returncode == 0 and lines
                          else {**spec, "error": (proc.stderr.strip().splitlines()
                                                  or ["no output"])[-1]})
            except subprocess.TimeoutExpired:
                result = {**spec, "error": f"not finished in {args.timeout} s (killed)"}
            result["wall_s"] = time.perf_counter() - start
            runs.append(result)
            print(f"bonus {bonus:3.1f} {name:12s} " + (
                result["error"] if "error" in result else
                f"partial {result['partial_s']:8.2f} s  pairs {result['pairs']:6d}  "
                f"objective {result['objective']:.6f}  " + (
                    f"match_graph {result['match_graph_s']:7.2f} s  PW-MCC {result['pwmcc']:.4f}"
                    f" (bound {result['upper_bound']:.4f})  " if "pwmcc" in result else "")
                + f"peak {result['peak_rss_mb']:.0f} MB"), flush=True)
    record = {"command": "python " + " ".join(sys.argv),
              "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "loadavg_end": os.getloadavg(), "graph": info, "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "partial_matching.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    old[args.label or Path(args.graph).name] = record
    path.write_text(json.dumps(old, indent=1) + "\n")


def component_sizes(g: Any) -> dict[str, Any]:
    """Connected components of the positive-similarity candidate graph (what the solver
    splits on): how many, and the rows x columns of the largest."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n_a, n_b = int(g["n_a"]), int(g["n_b"])
    keep = g["sim"] > 0
    r, c = g["rows"][keep], g["cols"][keep]
    adjacency = coo_matrix((np.ones(r.size), (r, n_a + c)), shape=(n_a + n_b,) * 2)
    _, label = connected_components(adjacency, directed=False)
    touched = np.zeros(n_a + n_b, bool)
    touched[r], touched[n_a + c] = True, True
    ids, counts = np.unique(label[touched], return_counts=True)
    big = ids[np.argmax(counts)]
    return {"positive_edges": int(r.size), "components": int(ids.size),
            "largest_rows": int(((label[:n_a] == big) & touched[:n_a]).sum()),
            "largest_cols": int(((label[n_a:] == big) & touched[n_a:]).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("extract")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--cache", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--n-tokens", type=int, default=100_000)
    p.add_argument("--k", type=int, default=16)
    p = sub.add_parser("synthetic")
    p.add_argument("--n", type=int, default=8192)
    p.add_argument("--tokens", type=int, default=27_680)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--k", type=int, default=16)
    p = sub.add_parser("solve")
    p.add_argument("graph")
    p.add_argument("--solvers", nargs="+", default=["doubled", "rectangular", "components"])
    p.add_argument("--bonus", type=float, nargs="+", default=[2.0, 0.0])
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--label", help="key in the results file (default: the graph folder)")
    p = sub.add_parser("worker")
    p.add_argument("spec")
    args = parser.parse_args()
    if args.command == "worker":
        print(json.dumps(worker(json.loads(args.spec))))
    else:
        {"extract": extract, "synthetic": synthetic, "solve": solve}[args.command](args)


if __name__ == "__main__":
    main()
