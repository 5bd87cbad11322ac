"""Micro-benchmarks behind the design of `sparselens.dictionaries.kernels`.

Each question ("how to find the top-k", "how to decode", ...) is a group of alternatives that
compute the same thing at the TopK training shape (4096 tokens, d=576, 9216 latents, k=32 by
default). Alternatives of a group run interleaved for several rounds and the minimum wall time
is reported, so that load from other processes hurts every alternative alike. Prints a table
and optionally writes JSON. Results and their interpretation are in docs/performance.md.

    python benchmarks/kernel_choices.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from sparselens.dictionaries import kernels, native_topk

Choice = dict[str, Callable[[], object]]


def random_problem(tokens: int, d: int, n: int, k: int, seed: int = 0) -> dict[str, Tensor]:
    """Inputs shaped like a TopK step: activations, weights, a selection and gradients."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, d, generator=gen)
    W_dec = torch.nn.functional.normalize(torch.randn(n, d, generator=gen), dim=1)
    W_enc = W_dec.T.contiguous()
    b_enc = torch.randn(n, generator=gen) * 0.1
    values, indices = (x @ W_enc + b_enc).topk(k, dim=-1, sorted=False)
    return {"x": x, "W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "values": values.relu(),
            "indices": indices, "grad_out": torch.randn(tokens, d, generator=gen)}


def torch_path(fn: Callable[[], object]) -> Callable[[], object]:
    """`fn` with the compiled top-k switched off (select_topk then uses `grouped_topk`)."""
    def run() -> object:
        os.environ[native_topk.ENV_SWITCH] = "0"
        try:
            return fn()
        finally:
            del os.environ[native_topk.ENV_SWITCH]
    return run


def selection(p: dict[str, Tensor], k: int) -> Choice:
    x, W, b = p["x"], p["W_enc"], p["b_enc"]
    xb, Wb, bb = x.bfloat16(), W.bfloat16(), b.bfloat16()
    return {
        "dense addmm + topk, fp32": lambda: torch.addmm(b, x, W).topk(k, -1, sorted=False),
        "dense addmm + topk, bf16": lambda: torch.addmm(bb, xb, Wb).topk(k, -1, sorted=False),
        "dense addmm + grouped topk, bf16": lambda: kernels.grouped_topk(
            torch.addmm(bb, xb, Wb), k),
        "tiled 256 + grouped, bf16": torch_path(lambda: kernels.select_topk(
            x, W, b, None, k, torch.bfloat16, tile_rows=256)),
        "tiled 512 + grouped, bf16": torch_path(lambda: kernels.select_topk(
            x, W, b, None, k, torch.bfloat16, tile_rows=512)),
        "tiled 1024 + grouped, bf16": torch_path(lambda: kernels.select_topk(
            x, W, b, None, k, torch.bfloat16, tile_rows=1024)),
        "tiled 1024 + grouped, fp32": torch_path(lambda: kernels.select_topk(
            x, W, b, None, k, None)),
        "tiled 1024 + compiled top-k, bf16": lambda: kernels.select_topk(
            x, W, b, None, k, torch.bfloat16),
        "tiled 1024 + compiled top-k, fp32": lambda: kernels.select_topk(x, W, b, None, k, None),
    }


def group_sizes(p: dict[str, Tensor], k: int) -> Choice:
    pre = torch.addmm(p["b_enc"], p["x"], p["W_enc"]).bfloat16()
    zero_bias = torch.zeros(pre.shape[1])
    return {f"grouped_topk group={s}": (lambda s=s: kernels.grouped_topk(pre, k, s))
            for s in (8, 16, 32, 64)} | {
        "torch.topk": lambda: pre.topk(k, -1, sorted=False),
        "compiled row_topk (native_topk.c)": lambda: native_topk.row_topk(pre, zero_bias, k)}


def decode(p: dict[str, Tensor], k: int) -> Choice:
    W, v, i = p["W_dec"], p["values"], p["indices"]
    pattern = kernels.SparsePattern.from_rows(i, W.shape[0])
    Wb, vb = W.bfloat16(), v.bfloat16()
    dense = torch.zeros(i.shape[0], W.shape[0]).scatter_(1, i, v)
    return {
        "embedding_bag fp32, a bag per token": lambda: F.embedding_bag(
            i, W, per_sample_weights=v, mode="sum"),
        "CSR x dense (fp32)": lambda: pattern.by_token(v.reshape(-1)) @ W,
        "embedding_bag bf16": lambda: F.embedding_bag(i, Wb, per_sample_weights=vb, mode="sum"),
        "dense codes @ W_dec (fp32)": lambda: dense @ W,
    }


def code_gradient(p: dict[str, Tensor], k: int) -> Choice:
    """d loss / d code values: the k dot products <grad_out[t], W_dec[i]> per token."""
    W, i, g = p["W_dec"], p["indices"], p["grad_out"]
    pattern = kernels.SparsePattern.from_rows(i, W.shape[0])
    template = pattern.by_token(torch.zeros(i.numel()))
    Wb, gb = W.bfloat16(), g.bfloat16()

    def gather_bmm(rows: int = 256) -> Tensor:
        return torch.cat([torch.bmm(W[i[s:s + rows]], g[s:s + rows, :, None])[..., 0]
                          for s in range(0, i.shape[0], rows)])

    return {
        "sampled_addmm (SDDMM, fp32)": lambda: torch.sparse.sampled_addmm(
            template, g, W.T, beta=0.0).values(),
        "gather rows + bmm, tiled (fp32)": gather_bmm,
        "dense grad @ W_dec.T + gather (bf16)": lambda: (gb @ Wb.T).gather(1, i),
    }


def weight_gradient(p: dict[str, Tensor], k: int) -> Choice:
    """``G^T X`` with G sparse (k per row): the shape of dW_dec and of dW_enc^T."""
    W, v, i, x = p["W_dec"], p["values"], p["indices"], p["x"]
    n = W.shape[0]
    pattern = kernels.SparsePattern.from_rows(i, n)

    def embedding_bag_backward() -> Tensor:
        weight = W.detach().requires_grad_()
        out = F.embedding_bag(i, weight, per_sample_weights=v, mode="sum")
        return torch.autograd.grad(out, weight, x)[0]

    def index_add() -> Tensor:
        rows = (v[:, :, None] * x[:, None, :]).reshape(-1, x.shape[1])
        return x.new_zeros(n, x.shape[1]).index_add_(0, i.reshape(-1), rows)

    def dense_bf16() -> Tensor:
        G = torch.zeros(i.shape[0], n, dtype=torch.bfloat16).scatter_(1, i, v.bfloat16())
        return G.T @ x.bfloat16()

    def csr_transposed() -> Tensor:
        order = pattern.latent_order
        csr = torch.sparse_csr_tensor(pattern.latent_rows, pattern.latent_tokens,
                                      v.reshape(-1)[order],
                                      (n, i.shape[0]), check_invariants=False)
        return csr @ x

    return {
        "embedding_bag, a bag per latent (fp32)": lambda: pattern.gather_tokens(
            v.reshape(-1), x),
        "CSR^T x dense (fp32)": csr_transposed,
        "embedding_bag backward (fp32)": embedding_bag_backward,
        "index_add_ (fp32)": index_add,
        "densify + GEMM (bf16)": dense_bf16,
        "pattern build (argsort + searchsorted)": lambda: kernels.SparsePattern.from_rows(i, n),
    }


def optimizer(p: dict[str, Tensor], k: int) -> Choice:
    params = [torch.nn.Parameter(p[name].clone()) for name in ("W_enc", "W_dec", "b_enc")]
    for param in params:
        param.grad = torch.randn_like(param)
    variants = {"Adam (default, for-loop)": {}, "Adam foreach": {"foreach": True},
                "Adam fused": {"fused": True}}
    return {name: torch.optim.Adam(params, lr=1e-6, **kw).step for name, kw in variants.items()}


GROUPS: dict[str, Callable[[dict[str, Tensor], int], Choice]] = {
    "top-k selection (incl. encoder GEMM)": selection,
    "top-k of bf16 pre-activations (grouped_topk group sizes, torch.topk, compiled)": group_sizes,
    "decode": decode,
    "gradient of the code values": code_gradient,
    "sparse weight gradient (n x d)": weight_gradient,
    "optimizer step (W_enc, W_dec, b_enc)": optimizer,
}


def run_group(choice: Choice, rounds: int) -> dict[str, float]:
    """Minimum wall time (ms) of each alternative, alternatives interleaved round by round."""
    best = {name: float("inf") for name in choice}
    for fn in choice.values():
        fn()  # warm up: allocator, oneDNN primitive caches
    for _ in range(rounds):
        for name, fn in choice.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], (time.perf_counter() - start) * 1e3)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--d", type=int, default=576)
    parser.add_argument("--latents", type=int, default=9216)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--only", default="", help="run only groups whose title contains this")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    if args.threads:
        torch.set_num_threads(args.threads)
    problem = random_problem(args.tokens, args.d, args.latents, args.k)
    results = {}
    print(f"{args.tokens} tokens, d={args.d}, n={args.latents}, k={args.k}, "
          f"threads={torch.get_num_threads()}, min of {args.rounds} rounds")
    for title, make in GROUPS.items():
        if args.only and args.only not in title:
            continue
        results[title] = run_group(make(problem, args.k), args.rounds)
        print(f"\n{title}")
        for name, ms in results[title].items():
            print(f"  {name:44s} {ms:9.1f} ms")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
