"""Crosscoder (Lindsey et al., "Sparse Crosscoders for Cross-Layer Features and Model Diffing",
2024): one latent space read from and written to several sources at once.

Each source s (a layer, or the same layer of another model) has its own encoder block
``W_enc[s]`` and decoder block ``W_dec[:, s]``; a latent's code is shared:

    f = sparsify(Σ_s (x_s - b_dec,s) W_enc[s] + b_enc),     x̂_s = f W_dec[:, s] + b_dec,s

With all sources read and written this is the *acausal* crosscoder. The blocks are stored as
one ``(Σ d_s, n)`` encoder and one ``(n, Σ d_s)`` decoder (`encoder_by_source` and
`decoder_by_source` give the per-source views), so the base class's machinery applies as is.

Training follows Minder et al. ("Overcoming Sparsity Artifacts in Crosscoders to Interpret
Chat-Tuning", 2025): BatchTopK instead of an L1 penalty, which avoids the two artifacts that
make L1 crosscoders report shared concepts as model-specific, with latents ranked by
``f_j · Σ_s ||d_j,s||``. The decoder is left unconstrained: the per-source decoder norms
``||d_j,s||`` are what model diffing reads (a latent whose norm is ~0 in one model is specific to
the other), and the score makes selection independent of how a latent splits its scale between
encoder and decoder. ``selection="topk"`` selects per token instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sparselens.dictionaries.base import register
from sparselens.dictionaries.init import geometric_median
from sparselens.dictionaries.stacked import StackedConfig, StackedDictionary


@dataclass
class CrosscoderConfig(StackedConfig):
    unit_norm_decoder: bool = False
    """Decoder rows are left free: their per-source norms are the model-diffing signal."""


@register("crosscoder")
class Crosscoder(StackedDictionary):
    """Shared latents over stacked sources; input ``(B, n_sources, width)`` or flattened."""

    config_class = CrosscoderConfig
    cfg: CrosscoderConfig

    # ---- per-source views of the weights ----

    def encoder_by_source(self) -> Tensor:
        """``(n_sources, width, n_latents)``."""
        return self.W_enc.unflatten(0, (self.n_sources, self.cfg.d_source))

    def decoder_by_source(self) -> Tensor:
        """``(n_latents, n_sources, width)``, in the normalised space of each source."""
        return self.W_dec.unflatten(-1, (self.n_sources, self.cfg.d_source))

    def decoder_norms(self) -> Tensor:
        """``(n_latents, n_sources)``: how strongly each latent writes to each source."""
        return self.decoder_by_source().norm(dim=-1)

    # ---- forward pieces (model space, flattened sources) ----

    def native(self, stacked: Tensor) -> Tensor:
        return stacked.flatten(-2)

    def selection_scores(self, pre: Tensor) -> Tensor:
        """A latent's activation times its summed per-source decoder norms."""
        return super().selection_scores(pre) * self.decoder_norms().sum(-1).detach()

    @torch.no_grad()
    def initialize_from_data(self, x: Tensor, target: Tensor | None = None) -> None:
        """Per-source scales, then b_dec = the geometric median of the sample in model space."""
        model = self.fit_source_scales(self.as_sources(x))
        self.b_dec.copy_(geometric_median(model.flatten(-2).float()).to(self.b_dec.dtype))
