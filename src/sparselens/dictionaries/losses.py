"""Loss terms as free functions, so variants compose them instead of copying them.

Conventions: a reconstruction error is the squared norm per token, averaged over tokens; a
penalty is summed over latents and averaged over tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor

DENSE_AUX_FACTOR = 8
"""AuxK decodes densely when there are at most this many times k_aux candidate latents: a GEMM
over the (few) dead latents runs at matrix speed, the sparse sums at memory speed."""


def squared_error(recon: Tensor, target: Tensor) -> Tensor:
    """Squared error norm per token, averaged over tokens."""
    return (recon - target).pow(2).sum(-1).mean()


def auxk_loss(pre: Tensor, residual: Tensor, W_dec: Tensor, dead_mask: Tensor | None,
              k_aux: int, mse_scale: Tensor | None = None, by_magnitude: bool = False) -> Tensor:
    """AuxK (Gao et al., appendix A.2): reconstruct the main model's error from the top
    ``k_aux`` *dead* latents, with the error as a stop-gradient target.

    Normalised as in the paper: the auxiliary MSE divided by the MSE of predicting the error by
    its mean (here, its variance per token), so the term is scale-free; it is zero when nothing
    is dead. ``pre`` are pre-activations ``(B, n)``; ``residual = target - recon`` ``(B, d)``.
    With `by_magnitude` (AbsTopK) latents are ranked by ``|pre|`` and keep their sign;
    otherwise the values go through a ReLU.
    """
    if dead_mask is None or not bool(dead_mask.any()) or k_aux <= 0:
        return pre.new_zeros(())
    k = min(k_aux, int(dead_mask.sum()))
    score = pre.abs() if by_magnitude else pre
    masked = torch.where(dead_mask, score, torch.full_like(score, -torch.inf))
    indices = masked.topk(k, dim=-1, sorted=False).indices
    values = pre.gather(-1, indices)
    if not by_magnitude:
        values = torch.relu(values)
    if W_dec.shape[0] <= DENSE_AUX_FACTOR * k:  # few candidates: one GEMM beats sparse sums
        codes = torch.zeros_like(pre).scatter(-1, indices, values)
        aux_recon = codes.to(W_dec.dtype) @ W_dec
    else:
        aux_recon = _sparse_rows_decode(values, indices, W_dec)
    err = residual.detach()
    aux_mse = squared_error(aux_recon, err)
    scale = (err - err.mean(0)).pow(2).sum(-1).mean() if mse_scale is None else mse_scale
    return aux_mse / scale.clamp_min(1e-12)


def _sparse_rows_decode(values: Tensor, indices: Tensor, W_dec: Tensor) -> Tensor:
    """``Σ_j values[:, j] W_dec[indices[:, j]]`` ``(B, d)`` with sparse gradients.

    AuxK decodes ``k_aux`` latents per token (k_aux = d/2 by default, about ten times the main
    k), so autograd through ``embedding_bag`` (whose CPU backward builds the weight gradient
    entry by entry) cost more than the rest of a TopK step; the sparse kernel's decode computes
    the same gradients with forward-only bag sums.
    """
    from sparselens.dictionaries.kernels import SparsePattern, sparse_decode

    rows = indices.reshape(-1, indices.shape[-1])
    pattern = SparsePattern.from_rows(rows, W_dec.shape[0])
    decoded = sparse_decode(values.reshape(-1).to(W_dec.dtype), pattern, W_dec)
    return decoded.reshape(*indices.shape[:-1], W_dec.shape[1])


def l1_penalty(codes: Tensor, W_dec: Tensor | None = None) -> Tensor:
    """Sum of |codes| per token, averaged; weighted by decoder row norms when W_dec is given
    (Anthropic's April 2024 update, which leaves the decoder unconstrained)."""
    if W_dec is None:
        return codes.abs().sum(-1).mean()
    return (codes.abs() * W_dec.norm(dim=-1)).sum(-1).mean()


def lp_penalty(codes: Tensor, p: float) -> Tensor:
    """``Σ_i |f_i|^p`` per token, averaged (the Lp^p penalty of p-annealing).

    Zero codes contribute 0 and no gradient: the derivative of ``|f|^p`` at 0 is infinite for
    p < 1, and the `where` keeps that infinity out of the backward pass.
    """
    magnitude = codes.abs()
    active = magnitude > 0
    safe = torch.where(active, magnitude, torch.ones_like(magnitude))
    return torch.where(active, safe.pow(p), torch.zeros_like(magnitude)).sum(-1).mean()


def kl_to_standard_normal(mean: Tensor, log_var: Tensor) -> Tensor:
    """``KL(N(μ, σ²) || N(0, 1))`` summed over latents, averaged over tokens."""
    return 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).sum(-1).mean()


def norm_matching_loss(code_norm: Tensor, afa: Tensor) -> Tensor:
    """``(||f||_2 - AFA)^2`` averaged over tokens (the AFA loss of the top-AFA SAE)."""
    return (code_norm - afa).pow(2).mean()


def prefix_partials(codes: Tensor, W_dec: Tensor, sizes: list[int]) -> Tensor:
    """Cumulative decodes of nested prefixes, ``(len(sizes), B, d)``: entry j is
    ``codes[:, :m_j] @ W_dec[:m_j]`` with ``m_j = sizes[0] + ... + sizes[j]``.

    Each group's slice of the dictionary is decoded once and the prefixes are running sums.
    """
    parts = torch.stack([piece @ W for piece, W in zip(codes.split(sizes, dim=-1),
                                                       W_dec.split(sizes, dim=0))])
    return parts.cumsum(0)
