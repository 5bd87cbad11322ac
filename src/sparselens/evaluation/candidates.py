"""Each latent's nearest partners by decoder cosine, without the dense similarity matrix.

The sparse matcher (`matching.py`) needs, for every latent of A and of B, its `k` most similar
latents on the other side (the candidate graph) and its best similarity (for the certificate
``upper_bound``: no one-to-one matching can beat the mean of the best similarities). Both come
from one pass over ``A @ B.T`` in row blocks with a running top-k per row and per column.

**bfloat16.** That GEMM is the whole cost at 65,536 latents (2.7 TFLOP at width 640). Where the
hardware multiplies bfloat16 natively (`core.hardware.fast_bfloat16`), the search runs in
bfloat16 with `margin` extra candidates per latent, and every candidate is rescored exactly
(float64 dot products of the float32 unit rows). The bfloat16 score of a pair is within
`bfloat16_error_bound` of the exact cosine, so a partner beyond a latent's ``k + margin``
bfloat16 candidates scores at most the last candidate's bfloat16 score plus that bound: each
latent's best similarity is reported as the larger of its best rescored candidate and that
number. It is the exact best whenever the rescored best beats it (nearly always when the
latent has a real counterpart), otherwise a proven upper bound, so the certificate stays valid.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

BF16_MARGIN = 8
"""Extra candidates per latent taken from bfloat16 scores before exact rescoring."""
RESCORE_ROWS = 256
"""Latents rescored at a time (one ``rows x (k + margin) x d`` float64 gather)."""


@torch.no_grad()
def top_candidates(a: Tensor, b: Tensor, k: int, block: int = 1024
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The `k` largest entries of ``a @ b.T`` per row and per column, in row blocks.

    Returns (row values ``(n_a, k)``, row indices into b, column values ``(k, n_b)``, column
    indices into a); values in float32 whatever the inputs' dtype (bfloat16 inputs give
    bfloat16-rounded values). Peak memory is one ``block x n_b`` float32 tile plus the running
    top-k. Per column, only the entries of a tile above that column's running k-th best can
    enter its top k, and after the first blocks they are few: they are merged by one sort
    (`_merge_columns`) instead of a top-k down every column of every tile (a strided scan
    that cost as much as the GEMM).
    """
    n_a, n_b = a.shape[0], b.shape[0]
    k_row, k_col = min(k, n_b), min(k, n_a)
    row_val = torch.empty((n_a, k_row), device=a.device)
    row_idx = torch.empty((n_a, k_row), dtype=torch.long, device=a.device)
    col_val = torch.full((k_col, n_b), float("-inf"), device=a.device)
    col_idx = torch.zeros((k_col, n_b), dtype=torch.long, device=a.device)
    bt = b.T.contiguous()
    for start in range(0, n_a, block):
        tile = (a[start:start + block] @ bt).float()
        row_val[start:start + block], row_idx[start:start + block] = tile.topk(k_row, dim=1)
        col_val, col_idx = _merge_columns(tile, start, col_val, col_idx)
        del tile
    return row_val, row_idx, col_val, col_idx


def _merge_columns(tile: Tensor, start: int, col_val: Tensor, col_idx: Tensor
                   ) -> tuple[Tensor, Tensor]:
    """The running per-column top k ``(k, n_b)`` (descending) updated with a tile whose rows
    are `start`, `start + 1`, ...: entries above a column's current k-th value, merged with
    that column's current top k by one sort on (column, value)."""
    k, n_b = col_val.shape
    hit_r, hit_c = (tile > col_val[-1]).nonzero(as_tuple=True)
    if hit_r.numel() == 0:
        return col_val, col_idx
    if hit_r.numel() > tile.numel() // 4:  # the first blocks: most entries qualify
        val, idx = tile.topk(min(k, tile.shape[0]), dim=0)
        merged_val = torch.cat([col_val, val])
        keep = merged_val.topk(k, dim=0).indices
        return merged_val.gather(0, keep), torch.cat([col_idx, idx + start]).gather(0, keep)
    cols = torch.unique(hit_c)
    values = torch.cat([col_val[:, cols].T.flatten(), tile[hit_r, hit_c]])
    rows = torch.cat([col_idx[:, cols].T.flatten(), hit_r + start])
    slot = torch.searchsorted(cols, hit_c)  # position of each hit's column within `cols`
    owner = torch.cat([torch.arange(cols.numel()).repeat_interleave(k), slot])
    order = torch.sort(values, descending=True, stable=True).indices
    order = order[torch.sort(owner[order], stable=True).indices]  # by column, best first
    counts = torch.bincount(owner, minlength=cols.numel())
    first = torch.cumsum(counts, 0) - counts
    take = first.unsqueeze(0) + torch.arange(k).unsqueeze(1)  # (k, n_cols): each column's top k
    col_val[:, cols] = values[order][take]
    col_idx[:, cols] = rows[order][take]
    return col_val, col_idx


def bfloat16_error_bound(d: int) -> float:
    """Largest ``|bf16 score - a.b|`` for unit rows `a`, `b` of width `d`, when both are
    rounded to bfloat16 (relative error ``u = 2**-8`` per element, so ``|da| <= u``), the
    products summed in float32 (error at most ``gamma_d = d 2**-24 / (1 - d 2**-24)`` of the
    sum of magnitudes, itself at most ``(1 + u)**2``) and the result rounded to bfloat16 (``u``
    relative). AVX512-BF16 and AMX accumulate in float32; a kernel that summed in bfloat16
    would break this bound (the tests check it on this machine's kernel)."""
    u, eps32 = 2.0 ** -8, 2.0 ** -24
    gamma = d * eps32 / (1 - d * eps32)
    rounded_inputs = 2 * u + u * u
    summed = rounded_inputs + gamma * (1 + u) ** 2
    return summed + u * (1 + summed)


@torch.no_grad()
def rescore(a: Tensor, b: Tensor, idx: Tensor) -> Tensor:
    """``(n_a, m)`` float64 dot products of each row of `a` with the rows ``b[idx[i]]``."""
    out = torch.empty(idx.shape, dtype=torch.float64)
    for start in range(0, a.shape[0], RESCORE_ROWS):  # float64 copies of one block at a time
        rows = a[start:start + RESCORE_ROWS].double().unsqueeze(1)
        partners = b[idx[start:start + RESCORE_ROWS]].double()
        out[start:start + RESCORE_ROWS] = (rows @ partners.transpose(1, 2)).squeeze(1)
    return out


def use_bfloat16(device: torch.device) -> bool:
    """Whether the candidate search runs in bfloat16 on `device` (native bf16 GEMMs)."""
    from sparselens.core.hardware import fast_bfloat16

    return fast_bfloat16(device) is not None


def decoder_candidates(a: Tensor, b: Tensor, k: int, block: int = 1024,
                       bfloat16: bool | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Candidate edges (rows, cols) between unit decoders: each latent's `k` nearest partners
    in both directions; and each latent's best cosine (best_a, best_b), exact or (bfloat16
    search, rarely) a proven upper bound. `bfloat16` None: where the hardware is fast at it."""
    if bfloat16 is None:
        bfloat16 = use_bfloat16(a.device)
    if not bfloat16:
        row_val, row_idx, col_val, col_idx = top_candidates(a, b, k, block)
        return _edges(row_idx, col_idx.T, row_val[:, 0].double().cpu().numpy(),
                      col_val[0].double().cpu().numpy())
    row_val, row_idx, col_val, col_idx = top_candidates(a.bfloat16(), b.bfloat16(),
                                                        k + BF16_MARGIN, block)
    bound = bfloat16_error_bound(a.shape[1])
    sides = []
    for x, y, val, idx in ((a, b, row_val, row_idx), (b, a, col_val.T, col_idx.T)):
        exact = rescore(x, y, idx)
        order = exact.argsort(dim=1, descending=True)[:, :k]
        best = exact.max(dim=1).values
        if idx.shape[1] < y.shape[0]:  # some partners were never rescored
            best = torch.maximum(best, val[:, -1].double() + bound)
        sides.append((idx.gather(1, order), best.cpu().numpy()))
    (row_idx, best_a), (col_idx, best_b) = sides
    return _edges(row_idx, col_idx, best_a, best_b)


def _edges(row_idx: Tensor, col_idx: Tensor, best_a: np.ndarray, best_b: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, best_a, best_b) from each A latent's candidate columns ``(n_a, k)`` and
    each B latent's candidate rows ``(n_b, k)``."""
    n_a, n_b = row_idx.shape[0], col_idx.shape[0]
    rows = np.concatenate([np.repeat(np.arange(n_a), row_idx.shape[1]),
                           col_idx.flatten().cpu().numpy()])
    cols = np.concatenate([row_idx.flatten().cpu().numpy(),
                           np.repeat(np.arange(n_b), col_idx.shape[1])])
    return rows, cols, best_a, best_b
