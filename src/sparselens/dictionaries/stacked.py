"""What crosscoders and multi-layer SAEs share: an input made of several aligned *sources*.

A source is one activation site: a layer of one model (acausal crosscoder, multi-layer SAE) or
the same layer of two models (model-diffing crosscoder). The rows of all sources describe the
same token, so a batch is ``(B, n_sources, width)``. The trainer and the caches move
``(B, width)`` matrices, so the sources also travel flattened as ``(B, n_sources * width)``
under one name that joins the source names with ``+`` (``base/resid.6+chat/resid.6``); every
method here accepts either layout.

Shared pieces:

- per-source normalisation: residual norms differ a lot between layers (and a little between
  models), so each source gets its own scale (a buffer, ``source_scale``) that gives it the
  median norm sqrt(width), estimated once at initialisation. The median, not the mean: the
  tokens on which one model differs from the other (what model diffing looks for) may be
  few and large, and must not shrink that model's shared features. Saving folds the trainer's global
  scale into that buffer instead of into the weights, so decoder norms (which model diffing
  compares) and thresholds keep their meaning in a checkpoint.
- selection by TopK or BatchTopK over a per-latent *score* (`selection_scores`); the crosscoder
  scores a latent by its activation times its summed decoder norms, as in Minder et al.
  ("Overcoming Sparsity Artifacts in Crosscoders", 2025). The selection functions are the
  family's (`batch_topk`, the threshold's running average), applied to the scores; the AuxK
  loss is the family's `auxk_loss`. BatchTopK's per-token cap (`token_cap`, a multiple of k)
  applies to the scores of one row (a token for the crosscoder, a token at one layer for the
  multi-layer SAE) in training and after the inference threshold, as for the plain SAEs.

The class derives from `Dictionary` directly and calls those functions, instead of inheriting
the TopK/BatchTopK classes: a crosscoder is two levels below `Dictionary`, and a change to the
plain SAEs' training path (their sparse kernel) cannot leak into it. Its config still extends
`BatchTopKConfig`, so ``k``, ``k_aux``, ``aux_coef`` and ``threshold_decay`` mean the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from sparselens.core.dtypes import parse_dtype
from sparselens.data.batch import split_sources
from sparselens.dictionaries.base import Dictionary, LossOutput, StepContext
from sparselens.dictionaries.batchtopk import BatchTopKConfig, batch_topk, cap_per_token
from sparselens.dictionaries.losses import auxk_loss
from sparselens.dictionaries.thresholds import ema_update_, min_positive

SELECTIONS = ("batchtopk", "topk")
DEFAULT_SOURCES = 2


@dataclass
class StackedConfig(BatchTopKConfig):
    n_sources: int | None = None
    """Number of stacked sources (layers or models); d_in is n_sources x the source width.
    None: the number of '+'-joined names in `hookpoint`, or 2 without such a name."""
    selection: str = "batchtopk"
    """batchtopk (k x batch size largest scores in training, a threshold at inference) or topk
    (k per token)."""
    normalize_sources: bool = True
    """Scale every source to the same median norm, sqrt(width), estimated at initialisation, so
    that no layer or model dominates the loss."""

    def __post_init__(self) -> None:
        super().__post_init__()
        named = split_sources(self.hookpoint) if self.hookpoint else None
        if self.n_sources is None:
            self.n_sources = len(named) if named and len(named) > 1 else DEFAULT_SOURCES
        if not isinstance(self.n_sources, int) or self.n_sources < 1:
            raise ValueError(f"n_sources must be a positive integer, got {self.n_sources!r}")
        if named and len(named) > 1 and len(named) != self.n_sources:
            raise ValueError(f"hookpoint {self.hookpoint!r} names {len(named)} sources but "
                             f"n_sources={self.n_sources}")
        if self.d_in % self.n_sources:
            raise ValueError(f"d_in={self.d_in} is not n_sources ({self.n_sources}) times a "
                             "source width; d_in is the width of all sources together")
        if self.d_out != self.d_in or self.skip_connection:
            raise ValueError("a crosscoder or multi-layer SAE reconstructs its own sources: "
                             "d_out must equal d_in and skip_connection must be off")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")

    @property
    def d_source(self) -> int:
        """Width of one source."""
        assert self.n_sources is not None
        return self.d_in // self.n_sources

    @property
    def sources(self) -> list[str]:
        """Source names: from a ``+``-joined hookpoint, else ``source0, source1, ...``."""
        named = split_sources(self.hookpoint) if self.hookpoint else []
        if len(named) == self.n_sources:
            return named
        return [f"source{i}" for i in range(self.n_sources or 0)]


class StackedDictionary(Dictionary):
    """Base of dictionaries over stacked sources: layout, per-source scales, scored selection.

    Subclasses set the layout the weights act on (`native`), the model-space `decode_scaled`,
    and may override `selection_scores` and `weight_config`.
    """

    config_class: ClassVar[type[StackedConfig]] = StackedConfig
    cfg: StackedConfig

    def __init__(self, cfg: StackedConfig) -> None:
        super().__init__(self.weight_config(cfg))
        self.cfg = cfg
        dtype = parse_dtype(cfg.dtype)
        self.register_buffer("source_scale", torch.ones(self.n_sources, dtype=dtype))
        # The BatchTopK inference threshold on the scores (NaN until training sets it).
        self.register_buffer("threshold", torch.full((), torch.nan, dtype=dtype))

    @classmethod
    def weight_config(cls, cfg: StackedConfig) -> StackedConfig:
        """The config whose widths size the weights (all sources together by default)."""
        return cfg

    @property
    def n_sources(self) -> int:
        assert self.cfg.n_sources is not None
        return self.cfg.n_sources

    # ---- layout ----

    def is_stacked(self, x: Tensor) -> bool:
        """True for ``(..., n_sources, width)`` input, False for the flattened layout."""
        return x.ndim >= 2 and tuple(x.shape[-2:]) == (self.n_sources, self.cfg.d_source)

    def as_sources(self, x: Tensor) -> Tensor:
        """`x` as ``(..., n_sources, width)``, from either layout."""
        if self.is_stacked(x):
            return x
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(f"expected inputs of shape (..., {self.n_sources}, "
                             f"{self.cfg.d_source}) or (..., {self.cfg.d_in}), got "
                             f"{tuple(x.shape)}; are these the sources it was trained on?")
        return x.unflatten(-1, (self.n_sources, self.cfg.d_source))

    def like_input(self, out: Tensor, x: Tensor) -> Tensor:
        """Stacked output `out` in the layout of input `x`."""
        return out if self.is_stacked(x) else out.flatten(-2)

    # ---- per-source scaling ----
    #
    # Three spaces: raw activations; "scaled" ones, raw x the global ``input_scale`` (what the
    # trainer passes to `training_loss` and `initialize_from_data`, as for every dictionary);
    # and the *model space*, scaled x ``source_scale`` per source, where the weights, codes,
    # thresholds and decoder norms live and the loss is measured.

    def native(self, stacked: Tensor) -> Tensor:
        """Model-space sources ``(..., S, width)`` in the layout the weights act on."""
        return stacked

    def to_model_space(self, scaled: Tensor) -> Tensor:
        """Scaled sources (either layout) -> model space ``(..., S, width)``."""
        return self.as_sources(scaled) * self.source_scale.unsqueeze(-1).to(scaled.dtype)

    def model_space(self, x: Tensor) -> Tensor:
        """Raw sources (either layout) -> model space ``(..., S, width)``."""
        return self.to_model_space(self.scale_input(x))

    def to_raw(self, model: Tensor) -> Tensor:
        """Model-space ``(..., S, width)`` -> raw."""
        factors = (self.source_scale * self.cfg.output_scale).unsqueeze(-1)
        return model / factors.to(model.dtype)

    @torch.no_grad()
    def fit_source_scales(self, stacked: Tensor) -> Tensor:
        """Set ``source_scale`` from a scaled sample so that each source has median norm
        sqrt(width) (over tokens where it is not zero); returns the sample in model space."""
        if self.cfg.normalize_sources:
            norms = torch.stack([_median_positive(n) for n in stacked.float().norm(dim=-1).T])
            if not bool(torch.isfinite(norms).all() and (norms > 0).all()):
                raise ValueError(f"cannot normalise sources whose median norms are "
                                 f"{norms.tolist()}; a source is all zeros or not finite in "
                                 "the sample")
            self.source_scale.copy_((math.sqrt(self.cfg.d_source) / norms).to(self.source_scale))
        return self.to_model_space(stacked)

    @torch.no_grad()
    def fold_scales(self) -> None:
        """Fold the global scale into ``source_scale`` (not into the weights): decoder norms
        and the BatchTopK threshold, which live in model space, stay valid."""
        self.source_scale.mul_(self.cfg.input_scale)
        self.cfg.input_scale = 1.0
        self.cfg.output_scale = 1.0

    # ---- selection ----

    def selection_scores(self, pre: Tensor) -> Tensor:
        """How strongly each latent claims a slot; the plain ReLU activation by default."""
        return torch.relu(pre)

    def topk_mask(self, scores: Tensor) -> Tensor:
        """True at the k best positive scores of every row."""
        indices = scores.topk(self.cfg.k, dim=-1, sorted=False).indices
        keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, indices, True)
        return keep & (scores > 0)

    def training_codes(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pre = self.pre_acts(x)
        if self.cfg.selection == "topk":
            return pre, self.activation(pre)
        scores = self.selection_scores(pre)
        keep = batch_topk(scores.detach(), self.cfg.k, self.cfg.resolved_token_cap) > 0
        ema_update_(self.threshold, min_positive(scores.detach() * keep),
                    self.cfg.threshold_decay)
        return pre, torch.relu(pre) * keep

    def activation(self, pre: Tensor) -> Tensor:
        """Per token: the estimated score threshold (BatchTopK), or TopK of the scores."""
        scores = self.selection_scores(pre)
        if self.cfg.selection == "topk" or bool(torch.isnan(self.threshold)):
            keep = self.topk_mask(scores)
        else:
            passed = torch.where(scores > self.threshold, scores, torch.zeros_like(scores))
            keep = cap_per_token(passed, self.cfg.resolved_token_cap) > 0
        return torch.relu(pre) * keep

    def loss_terms(self, x: Tensor, target: Tensor, pre: Tensor, codes: Tensor, recon: Tensor,
                   ctx: StepContext) -> dict[str, Tensor]:
        """AuxK (Gao et al.) on the dead latents, as for the TopK family, over rows (a
        multi-layer SAE's ``(B, n_layers, ...)`` tensors are one row per token and layer)."""
        if self.cfg.aux_coef == 0:
            return {}

        def rows(t: Tensor) -> Tensor:
            return t.reshape(-1, t.shape[-1])

        aux = auxk_loss(rows(pre), rows(target) - rows(recon), self.W_dec, ctx.dead_mask,
                        self.cfg.resolved_k_aux)
        return {"auxk": self.cfg.aux_coef * aux}

    # ---- entry points: scaled inputs in, model space inside ----

    def encode_scaled(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return super().encode_scaled(self.native(self.to_model_space(x)))

    def training_loss(self, x: Tensor, target: Tensor | None = None,
                      ctx: StepContext | None = None) -> LossOutput:
        """The base loss, measured in model space (every source weighs the same); the returned
        reconstruction is in the scaled space and layout of `x`, codes one row per code."""
        model_x = self.native(self.to_model_space(x))
        model_target = None if target is None else self.native(self.to_model_space(target))
        out = super().training_loss(model_x, model_target, ctx)
        recon = self.to_raw(self.as_sources(out.recon)) * self.cfg.output_scale
        out.recon = self.like_input(recon, x)
        out.codes = out.codes.flatten(0, -2)
        return out

    def decode(self, codes: Tensor) -> Tensor:
        """Raw reconstruction ``(..., n_sources, width)`` from codes."""
        return self.to_raw(self.as_sources(self.decode_scaled(codes)))

    def reconstruct(self, x: Tensor) -> Tensor:
        """Raw sources in (either layout), raw ``(..., n_sources, width)`` reconstruction out."""
        return self.decode(self.encode(x))

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction in the layout of the input."""
        return self.like_input(self.reconstruct(x), x)


def _median_positive(norms: Tensor) -> Tensor:
    """Median of the non-zero norms (a token where a source is exactly zero says nothing about
    its scale); NaN if there are none, or if any norm is not finite."""
    if not bool(torch.isfinite(norms).all()):
        return norms.new_tensor(torch.nan)
    positive = norms[norms > 0]
    return positive.median() if positive.numel() else norms.new_tensor(torch.nan)
