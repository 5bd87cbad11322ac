"""Fast training kernels for top-k dictionaries: never materialise the dense code matrix.

A plain TopK step builds the dense ``batch x latents`` pre-activation matrix, runs ReLU, top-k
and a scatter over it, decodes with a dense GEMM and back-propagates through all of it. Each
of those passes costs about as much as the encoder GEMM (docs/performance.md has the numbers).
Here only the encoder GEMM stays dense; everything after it touches ``batch x k`` entries:

1. `select_topk`: the pre-activations are computed a tile of rows at a time into one reused
   buffer (it stays in cache, and no fresh 100 MB tensor is page-faulted in every step), and the
   exact top-k of each row is found from group maxima instead of a full ``topk`` over every
   latent: on a CPU by the compiled kernel of `native_topk` (one pass, bias added as it reads),
   elsewhere by `grouped_topk` (pure torch, applied recursively). No autograd graph is
   recorded for this part.
2. `SparsePattern`: the selected ``(token, latent)`` pairs in token order (for decoding) and in
   latent order (for the weight gradients), built once per step by one ``argsort``.
3. `gathered_pre_acts`: an autograd function whose output is the selected pre-activations and
   whose backward is sparse: ``dW_enc = X^T G`` with ``k`` non-zeros per row of ``G``, computed
   as an ``embedding_bag`` over the rows of X with one bag per latent; ``db_enc`` by
   ``index_add``; ``db_dec`` as ``-W_enc db_enc``.
4. `sparse_decode`: ``codes @ W_dec`` as an ``embedding_bag`` over the decoder rows; backward by
   a sampled dense-dense product (only the ``k`` needed dot products per token, ``SDDMM``) and
   ``dW_dec`` as another per-latent ``embedding_bag``.

Sparse parts run in float32 (accurate; the CPU sparse kernels have no bfloat16 SDDMM), except
that under autocast the encoder GEMM runs in bfloat16 with float32 accumulation
(`matmul_dtype`) and so do the two weight-gradient sums (bfloat16 results, as autocast's dense
GEMMs would give). Everything is plain torch, so the same code runs on CUDA;
`tests/test_kernels.py` checks values, codes and all gradients against autograd through a
dense reference. Design measurements: docs/performance.md.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from sparselens.dictionaries import native_topk
from sparselens.dictionaries.step import LossOutput

MIN_GROUPED = 8
"""Rows shorter than this many times k go straight to ``torch.topk`` (grouping no longer pays)."""
TILE_ROWS = 1024
"""Rows of the pre-activation matrix computed at once in `select_topk` (measured best of
256-4096 at 4096 x 9216; fewer, larger tiles also suffer less on a loaded machine)."""


def group_size_for(n: int, k: int) -> int:
    """The power of two nearest ``sqrt(n / k)``: the group-maxima stage (``n / g`` entries)
    and the candidate stage (``k * g``) then cost about the same; 1 means "no grouping"."""
    if n < MIN_GROUPED * k:
        return 1
    size = 1
    while (2 * size) ** 2 * k <= n:
        size *= 2
    return size


def grouped_topk(pre: Tensor, k: int, group_size: int | None = None) -> tuple[Tensor, Tensor]:
    """Exact ``pre.topk(k, dim=-1)`` of a 2-D tensor (values, indices; unordered), faster.

    Split each row's ``n`` entries into ``n / group_size`` groups (strided, so the group
    maximum is a fast reduction over a non-contiguous axis) and take the k groups with the
    largest maxima. The k-th largest group maximum ``t`` is a value that at least k entries reach,
    so every top-k entry is ``>= t`` and lies in a group whose maximum is ``>= t``: one of those
    k groups. The answer is then the top-k of only ``k * group_size`` candidates. Both smaller
    top-k problems are solved the same way while they are long enough (``torch.topk`` costs
    about the same per entry whatever k is, so shrinking the rows is what pays: 9216 -> 576
    group maxima -> 144, and 512 candidates -> 128). Ties at the k-th value may pick different
    (equal-valued) entries than ``torch.topk``. `group_size` fixes the outer group size
    (default `group_size_for`).
    """
    rows, n = pre.shape
    size = group_size or group_size_for(n, k)
    if size < 2 or n % size or k * size >= n:
        return pre.topk(k, dim=-1, sorted=False)
    groups = n // size
    grouped = pre.view(rows, size, groups)  # entry (j, g) is latent j * groups + g
    top_groups = grouped_topk(grouped.amax(1), k)[1]  # (rows, k)
    members = top_groups[:, None, :] + torch.arange(0, n, groups, device=pre.device)[:, None]
    candidates = grouped.gather(2, top_groups[:, None, :].expand(rows, size, k))
    values, position = grouped_topk(candidates.reshape(rows, size * k), k)
    return values, members.reshape(rows, size * k).gather(1, position)


@torch.no_grad()
def select_topk(x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor | None, k: int,
                matmul_dtype: torch.dtype | None = None, tile_rows: int = TILE_ROWS,
                by_magnitude: bool = False) -> tuple[Tensor, Tensor]:
    """The k largest pre-activations ``(x - b_dec) @ W_enc + b_enc`` of every row of `x`
    (largest in absolute value with `by_magnitude`).

    Returns float32 values (raw: signed, before any ReLU) and int64 latent indices, ``(B, k)``.
    `matmul_dtype` (e.g. ``torch.bfloat16``) runs the GEMM in that dtype with float32
    accumulation; the selection then sees pre-activations rounded to it.
    """
    dtype = matmul_dtype or W_enc.dtype
    centred = x - b_dec if b_dec is not None else x
    centred, weight, bias = centred.to(dtype), W_enc.to(dtype), b_enc.to(dtype)
    rows = x.shape[0]
    tile = torch.empty(min(tile_rows, rows), W_enc.shape[1], dtype=dtype, device=x.device)
    native = native_topk.supports(tile, k) and native_topk.load() is not None
    values, indices = [], []
    for start in range(0, rows, tile.shape[0]):
        part = centred[start:start + tile.shape[0]]
        out = tile[:part.shape[0]]
        if native:  # the compiled kernel adds the bias itself, in float32
            top_values, top_indices = native_topk.row_topk(  # type: ignore[misc]
                torch.mm(part, weight, out=out), b_enc, k, by_magnitude)
        elif by_magnitude:
            pre = torch.addmm(bias, part, weight, out=out)
            top_indices = grouped_topk(pre.abs(), k)[1]
            top_values = pre.gather(1, top_indices)
        else:
            top_values, top_indices = grouped_topk(torch.addmm(bias, part, weight, out=out), k)
        values.append(top_values.float())
        indices.append(top_indices)
    return torch.cat(values), torch.cat(indices)


@dataclass(frozen=True)
class SparsePattern:
    """The active ``(token, latent)`` entries, flat and in token order, with offsets both ways.

    Values of the entries travel as flat ``(E,)`` tensors in the same order. TopK has exactly
    k entries per token; BatchTopK a varying number.
    """

    tokens: Tensor
    """``(E,)`` token of each entry, non-decreasing."""
    latents: Tensor
    """``(E,)`` latent of each entry (unsorted within a token)."""
    token_rows: Tensor
    """``(B + 1,)`` offsets of each token's entries (CSR row pointers)."""
    n_latents: int
    latent_order: Tensor
    """Permutation of the entries that sorts them by latent (stable in token)."""
    latent_rows: Tensor
    """``(n_latents + 1,)`` offsets of each latent's entries in latent order."""
    latent_tokens: Tensor
    """Token of each entry, in latent order."""

    @classmethod
    def from_rows(cls, indices: Tensor, n_latents: int) -> SparsePattern:
        """k entries per token: ``indices`` is ``(B, k)``."""
        rows, k = indices.shape
        tokens = torch.arange(rows, device=indices.device).repeat_interleave(k)
        return cls.from_entries(tokens, indices.reshape(-1), rows, n_latents)

    @classmethod
    def from_entries(cls, tokens: Tensor, latents: Tensor, n_tokens: int,
                     n_latents: int) -> SparsePattern:
        order = torch.argsort(latents, stable=True)
        return cls(tokens=tokens, latents=latents, n_latents=n_latents,
                   token_rows=_offsets(tokens, n_tokens), latent_order=order,
                   latent_rows=_offsets(latents[order], n_latents), latent_tokens=tokens[order])

    @property
    def n_tokens(self) -> int:
        return self.token_rows.shape[0] - 1

    def by_token(self, values: Tensor) -> Tensor:
        """Sparse CSR ``(B, n_latents)`` holding `values` at the entries."""
        return _csr(self.token_rows, self.latents, values, (self.n_tokens, self.n_latents))

    def decode(self, values: Tensor, W_dec: Tensor) -> Tensor:
        """``codes @ W_dec`` ``(B, d)``: an `embedding_bag` with one bag per token."""
        return F.embedding_bag(self.latents, W_dec, self.token_rows[:-1],
                               per_sample_weights=values, mode="sum")

    def gather_tokens(self, values: Tensor, rows: Tensor) -> Tensor:
        """``codes^T @ rows`` ``(n_latents, d)`` for `rows` ``(B, d)``.

        An `embedding_bag` over `rows` with one bag per latent (the entries in latent order):
        measured faster than a sparse-dense product, whose CPU wrapper zero-fills and copies
        its ``n x d`` output.
        """
        return F.embedding_bag(self.latent_tokens, rows, self.latent_rows[:-1],
                               per_sample_weights=values[self.latent_order], mode="sum")

    def sum_by_latent(self, values: Tensor) -> Tensor:
        """Per-latent sums of the entries' `values`: ``(n_latents,)``."""
        return values.new_zeros(self.n_latents).index_add_(0, self.latents, values)

    def dense(self, values: Tensor) -> Tensor:
        """The ``(B, n_latents)`` matrix of the entries (differentiable; a dense pass)."""
        out = values.new_zeros(self.n_tokens, self.n_latents)
        return out.index_put_((self.tokens, self.latents), values)


def transpose_blocked(matrix: Tensor, dtype: torch.dtype | None = None,
                      block_rows: int = 1024) -> Tensor:
    """``matrix.T`` as a new contiguous tensor, copied a block of rows at a time.

    The encoder gradient is built latent by latent, ``(n, d)``, but ``W_enc`` is ``(d, n)``.
    Handing autograd the transposed view makes it accumulate with a strided add (14 ms at
    9216 x 576 on 2 cores); one plain ``.T.contiguous()`` takes 11 ms, and blocks that stay in
    cache take 4 ms (measured, docs/performance.md).
    """
    rows, cols = matrix.shape
    out = torch.empty(cols, rows, dtype=dtype or matrix.dtype, device=matrix.device)
    for start in range(0, rows, block_rows):
        out[:, start:start + block_rows].copy_(matrix[start:start + block_rows].T)
    return out


def _offsets(sorted_ids: Tensor, count: int) -> Tensor:
    """CSR offsets ``(count + 1,)`` of a sorted id vector, without a host sync."""
    bounds = torch.arange(count + 1, device=sorted_ids.device, dtype=sorted_ids.dtype)
    return torch.searchsorted(sorted_ids, bounds)


def _csr(rows: Tensor, columns: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    """A CSR tensor without torch's "beta" warning; the patterns are valid by construction."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(rows, columns, values, size, check_invariants=False)


class _GatheredPreActs(torch.autograd.Function):
    """Output: the pre-activations at the pattern. Backward: sparse encoder gradients."""

    @staticmethod
    def forward(ctx, values: Tensor, pattern: SparsePattern, x: Tensor, W_enc: Tensor,
                b_enc: Tensor, b_dec: Tensor | None, sum_dtype: torch.dtype) -> Tensor:
        ctx.pattern, ctx.sum_dtype = pattern, sum_dtype
        ctx.has_b_dec = b_dec is not None
        ctx.save_for_backward(x, W_enc, b_dec if b_dec is not None else x.new_empty(0))
        return values.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        pattern: SparsePattern = ctx.pattern
        x, W_enc, b_dec = ctx.saved_tensors
        grad = grad.float()
        weight = W_enc.float()
        grad_b_enc = pattern.sum_by_latent(grad)
        grad_w = grad_x = grad_b_dec = None
        if ctx.needs_input_grad[3]:
            centred = (x - b_dec if ctx.has_b_dec else x).to(ctx.sum_dtype)
            sums = pattern.gather_tokens(grad.to(ctx.sum_dtype), centred)
            grad_w = transpose_blocked(sums, W_enc.dtype)
        if ctx.needs_input_grad[2]:
            grad_x = (pattern.by_token(grad) @ weight.T).to(x.dtype)
        if ctx.has_b_dec and ctx.needs_input_grad[5]:
            grad_b_dec = -(weight @ grad_b_enc).to(b_dec.dtype)
        return None, None, grad_x, grad_w, grad_b_enc.to(W_enc.dtype), grad_b_dec, None


class _SparseDecode(torch.autograd.Function):
    """``codes @ W_dec`` for codes given as (values, pattern); sparse in both directions."""

    @staticmethod
    def forward(ctx, values: Tensor, pattern: SparsePattern, W_dec: Tensor,
                sum_dtype: torch.dtype) -> Tensor:
        ctx.pattern, ctx.sum_dtype = pattern, sum_dtype
        ctx.save_for_backward(values, W_dec)
        # detached inputs select embedding_bag's forward-only kernel (no backward bookkeeping)
        codes = values.detach().float()
        return pattern.decode(codes, W_dec.detach().float()).to(W_dec.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pattern: SparsePattern = ctx.pattern
        values, W_dec = ctx.saved_tensors
        grad = grad.float()
        grad_values = grad_w = None
        if ctx.needs_input_grad[0]:
            template = pattern.by_token(torch.zeros_like(values, dtype=torch.float32))
            sampled = torch.sparse.sampled_addmm(template, grad, W_dec.float().T, beta=0.0)
            grad_values = sampled.values().to(values.dtype)
        if ctx.needs_input_grad[2]:
            sums = pattern.gather_tokens(values.to(ctx.sum_dtype), grad.to(ctx.sum_dtype))
            grad_w = sums.to(W_dec.dtype)
        return grad_values, None, grad_w, None


def gathered_pre_acts(values: Tensor, pattern: SparsePattern, x: Tensor, W_enc: Tensor,
                      b_enc: Tensor, b_dec: Tensor | None,
                      sum_dtype: torch.dtype | None = None) -> Tensor:
    """Differentiable pre-activations ``(x - b_dec) @ W_enc + b_enc`` at `pattern`.

    `values` are those pre-activations already computed (by `select_topk`, without autograd);
    gradients reach `x`, `W_enc`, `b_enc` and `b_dec` as if they were computed densely.
    `sum_dtype` is the dtype of the ``W_enc`` gradient's sums (default float32); see
    `sparse_training_forward`.
    """
    return _GatheredPreActs.apply(values, pattern, x, W_enc, b_enc, b_dec,
                                  sum_dtype or torch.float32)


def sparse_decode(values: Tensor, pattern: SparsePattern, W_dec: Tensor,
                  sum_dtype: torch.dtype | None = None) -> Tensor:
    """``codes @ W_dec`` (no bias) where the codes are `values` ``(B, k)`` at `pattern`;
    `sum_dtype` is the dtype of the ``W_dec`` gradient's sums (default float32)."""
    return _SparseDecode.apply(values, pattern, W_dec, sum_dtype or torch.float32)


@dataclass
class SparseForward:
    """What a sparse training step needs from the forward pass; entries are flat ``(E,)``."""

    pre: Tensor
    """Differentiable pre-activations of the active entries."""
    codes: Tensor
    """Code values of the active entries (after the ReLU, or signed for AbsTopK)."""
    pattern: SparsePattern
    recon: Tensor
    """``(B, d_out)`` reconstruction in scaled space (with ``b_dec``, without a skip path)."""

    @property
    def indices(self) -> Tensor:
        """``(E,)`` latent of each active entry."""
        return self.pattern.latents

    def dense_codes(self) -> Tensor:
        """The ``(B, n_latents)`` code matrix (differentiable; costs a dense pass)."""
        return self.pattern.dense(self.codes)


class SparseLossOutput(LossOutput):
    """A `LossOutput` that builds its dense ``codes`` only if someone reads them.

    Scattering ``B x k`` codes into a zeroed ``B x n`` matrix is a full pass over memory, as
    slow as the rest of a sparse step; a caller that only needs which latents fired or the L0
    reads `sparse` (values and indices) instead.
    """

    def __init__(self, loss: Tensor, recon: Tensor, sparse: SparseForward,
                 terms: dict[str, Tensor]) -> None:
        self.sparse = sparse
        self._codes: Tensor | None = None
        super().__init__(loss=loss, recon=recon, codes=None, terms=terms)  # type: ignore[arg-type]

    @property  # type: ignore[override]
    def codes(self) -> Tensor:
        if self._codes is None:
            self._codes = self.sparse.dense_codes()
        return self._codes

    @codes.setter
    def codes(self, value: Tensor | None) -> None:
        self._codes = value


@torch.no_grad()
def select_batch_topk(x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor | None, k: int,
                      matmul_dtype: torch.dtype | None = None,
                      tile_rows: int = TILE_ROWS,
                      token_cap: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """BatchTopK's selection: the ``k * B`` largest ReLU'd pre-activations of the whole batch.

    Each token offers its own top ``c = 4k`` (from `select_topk`); the batch keeps the best
    ``k * B`` offers. A token whose offers were all kept ("saturated": real activations have a
    few outlier tokens that hold many of the batch's largest values) may have more to give, so
    it offers its whole row instead, and the best ``k * B`` of the new candidates are kept. That
    is exact in one round: the candidates only grew, so the cut-off did not fall, and every
    entry a token did not offer is at most its smallest offer, already below the old cut-off.
    With `token_cap` each token offers exactly its top `token_cap` and never more (the capped
    BatchTopK of `batchtopk.batch_topk`).
    Returns flat (values, tokens, latents) in token order, values raw (before the ReLU).
    """
    rows, n = x.shape[0], W_enc.shape[1]
    offers = min(n, 4 * k if token_cap is None else token_cap)
    n_keep = min(k * rows, rows * offers)
    values, latents = select_topk(x, W_enc, b_enc, b_dec, offers, matmul_dtype, tile_rows)
    scores = values.relu()
    cutoff = scores.reshape(-1).topk(n_keep, sorted=False).values.min()
    saturated = scores.amin(-1) >= cutoff
    tokens = torch.arange(rows, device=x.device)[:, None].expand(rows, offers)
    values, tokens, latents = values.reshape(-1), tokens.reshape(-1), latents.reshape(-1)
    if token_cap is None and offers < n and bool(saturated.any()):
        wide = saturated.nonzero().squeeze(1)
        wide_values, wide_latents = select_topk(x[wide], W_enc, b_enc, b_dec, n, matmul_dtype,
                                                tile_rows)
        narrow = ~saturated[tokens]
        values = torch.cat([values[narrow], wide_values.reshape(-1)])
        tokens = torch.cat([tokens[narrow], wide.repeat_interleave(n)])
        latents = torch.cat([latents[narrow], wide_latents.reshape(-1)])
    kept = values.relu().topk(min(k * rows, values.numel()), sorted=False).indices
    kept = kept[torch.argsort(tokens[kept], stable=True)]
    return values[kept], tokens[kept], latents[kept]


def sparse_training_forward(x: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor,
                            b_dec: Tensor, k: int, *, selection: str = "rows",
                            pre_encoder_bias: bool = True,
                            matmul_dtype: torch.dtype | None = None,
                            token_cap: int | None = None) -> SparseForward:
    """A k-sparse SAE forward on scaled inputs, built from the sparse pieces above.

    `selection`: ``"rows"`` (TopK: the k largest pre-activations of each token, ReLU'd),
    ``"magnitude"`` (AbsTopK: the k largest ``|pre|`` of each token, signed) or ``"batch"``
    (BatchTopK: the ``k * B`` largest ReLU'd pre-activations of the batch). Equal, up to float
    rounding and ties, to selecting on the dense pre-activation matrix and decoding the dense
    codes with autograd through everything.

    With `matmul_dtype` (autocast's bfloat16) the two weight-gradient sums (``X^T G`` for the
    encoder, ``codes^T G`` for the decoder) also run in it, with float32 accumulation inside
    `embedding_bag` and a bfloat16 result: what autocast's dense GEMMs would give for the same
    products, at half the memory traffic. The forward values and the decode stay float32.
    """
    if x.ndim != 2:
        raise ValueError(f"the kernel takes a (batch, d_in) matrix, got shape {tuple(x.shape)}")
    if selection not in ("rows", "magnitude", "batch"):
        raise ValueError(f"selection must be rows, magnitude or batch, got {selection!r}")
    centre = b_dec if pre_encoder_bias else None
    n = W_enc.shape[1]
    with torch.autocast(x.device.type, enabled=False):
        if selection == "batch":
            values, tokens, latents = select_batch_topk(x, W_enc, b_enc, centre, k,
                                                        matmul_dtype, token_cap=token_cap)
            pattern = SparsePattern.from_entries(tokens, latents, x.shape[0], n)
        else:
            values, indices = select_topk(x, W_enc, b_enc, centre, k, matmul_dtype,
                                          by_magnitude=selection == "magnitude")
            if x.device.type != "cpu":  # some GPU sparse kernels want sorted columns
                indices, order = indices.sort(dim=-1)
                values = values.gather(1, order)
            pattern = SparsePattern.from_rows(indices, n)
            values = values.reshape(-1)
        pre = gathered_pre_acts(values.to(W_enc.dtype), pattern, x, W_enc, b_enc, centre,
                                matmul_dtype)
        codes = pre if selection == "magnitude" else torch.relu(pre)
        recon = sparse_decode(codes, pattern, W_dec, matmul_dtype) + b_dec
    return SparseForward(pre=pre, codes=codes, pattern=pattern, recon=recon)


def autocast_matmul_dtype(device: torch.device) -> torch.dtype | None:
    """The GEMM dtype autocast asks for on `device`, or None when autocast is off."""
    if not torch.is_autocast_enabled(device.type):
        return None
    return torch.get_autocast_dtype(device.type)


def pre_acts_of(x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor | None,
                latents: Tensor) -> Tensor:
    """Differentiable pre-activations ``(B, len(latents))`` of some latents only (AuxK needs
    the dead ones, usually few, and never the whole ``(B, n)`` matrix)."""
    centred = x - b_dec if b_dec is not None else x
    return centred @ W_enc.index_select(1, latents) + b_enc.index_select(0, latents)
