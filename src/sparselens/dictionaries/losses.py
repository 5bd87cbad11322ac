"""Loss terms as free functions, so variants compose them instead of copying them."""

from __future__ import annotations

import torch
from torch import Tensor


def auxk_loss(pre: Tensor, residual: Tensor, W_dec: Tensor, dead_mask: Tensor | None,
              k_aux: int, mse_scale: Tensor | None = None) -> Tensor:
    """AuxK (Gao et al., appendix A.2): reconstruct the main model's error from the top
    ``k_aux`` *dead* latents, with the error as a stop-gradient target.

    Normalised as in the paper: the auxiliary MSE divided by the MSE of predicting the error by
    its mean (here, its variance per token), so the term is scale-free; it is zero when nothing
    is dead. ``pre`` are pre-activations ``(B, n)``; ``residual = target - recon`` ``(B, d)``.
    """
    if dead_mask is None or not bool(dead_mask.any()) or k_aux <= 0:
        return pre.new_zeros(())
    k = min(k_aux, int(dead_mask.sum()))
    masked = torch.where(dead_mask, pre, torch.full_like(pre, -torch.inf))
    values, indices = masked.topk(k, dim=-1, sorted=False)
    values = torch.relu(values)
    aux_recon = torch.nn.functional.embedding_bag(
        indices, W_dec, per_sample_weights=values.to(W_dec.dtype), mode="sum")
    err = residual.detach()
    aux_mse = (aux_recon - err).pow(2).sum(-1).mean()
    scale = (err - err.mean(0)).pow(2).sum(-1).mean() if mse_scale is None else mse_scale
    return aux_mse / scale.clamp_min(1e-12)


def l1_penalty(codes: Tensor, W_dec: Tensor | None = None) -> Tensor:
    """Sum of |codes| per token, averaged; weighted by decoder row norms when W_dec is given
    (Anthropic's April 2024 update, which leaves the decoder unconstrained)."""
    if W_dec is None:
        return codes.abs().sum(-1).mean()
    return (codes.abs() * W_dec.norm(dim=-1)).sum(-1).mean()
