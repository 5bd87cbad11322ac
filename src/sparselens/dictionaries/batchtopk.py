"""BatchTopK SAE (Bussmann, Leask and Nanda, "BatchTopK Sparse Autoencoders", 2024).

Training keeps the ``k * B`` largest activations of the whole batch instead of k per token, so
hard tokens get more latents and easy ones fewer, with k active per token on average. A token's
codes then depend on its batch, which is wrong at inference; the paper replaces the batch
selection by a JumpReLU with one global threshold θ, estimated during training as the average
of the smallest activation kept in each batch. θ is the buffer ``threshold`` (shape ``()``),
saved with the checkpoint and used by `encode`/`forward` (train or eval mode alike).

Training runs through the sparse kernel (selection ``"batch"``, `kernels.select_batch_topk`);
the dense `training_codes` path is its reference. Subclasses that change the selection or the
threshold (Choice SAEs, Matryoshka's extra terms) do not inherit the kernel unless they opt in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from sparselens.dictionaries import kernels
from sparselens.dictionaries.base import register
from sparselens.dictionaries.thresholds import apply_threshold, ema_update_, min_positive
from sparselens.dictionaries.topk import SparseKernelTraining, TopKConfig


@dataclass
class BatchTopKConfig(TopKConfig):
    threshold_decay: float = 0.9
    """Decay of the running average of the per-batch minimum kept activation (the inference
    threshold; the first batch initialises it). 0.9 averages about the last 10 batches: the
    k*B-th largest activation of a batch varies little between batches, and a short memory
    follows the activations as they change during training."""

    token_cap: float | None = 4.0
    """The most latents one token may take, as a multiple of k, in training and at inference
    (None: no cap, as in the paper). Without it a few massive-norm tokens take thousands of
    latents each and FVU exceeds 1 (docs/dictionaries.md, 'Massive-activation tokens')."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.threshold_decay < 1.0:
            raise ValueError(f"threshold_decay must be in [0, 1), got {self.threshold_decay}")
        if self.token_cap is not None and not self.token_cap >= 1:
            raise ValueError(f"token_cap is a multiple of k, at least 1 (or None), got "
                             f"{self.token_cap}")

    @property
    def resolved_token_cap(self) -> int | None:
        """The cap in latents, or None when it does not bind (no cap, or at least n)."""
        if self.token_cap is None:
            return None
        cap = math.ceil(self.token_cap * self.k)
        return cap if cap < self.n_latents else None


def cap_per_token(acts: Tensor, cap: int | None) -> Tensor:
    """Keep each row's `cap` largest entries (all of them with None), zero the rest."""
    if cap is None:
        return acts
    values, indices = acts.topk(cap, dim=-1, sorted=False)
    return torch.zeros_like(acts).scatter_(-1, indices, values)


def batch_topk(pre: Tensor, k: int, cap: int | None = None) -> Tensor:
    """Keep the ``k * B`` largest ReLU activations of a ``(B, n)`` batch, zero the rest; with
    `cap`, a token offers only its `cap` largest."""
    acts = cap_per_token(torch.relu(pre), cap)
    flat = acts.reshape(-1)
    n_keep = min(k * acts.reshape(-1, acts.shape[-1]).shape[0], flat.numel())
    values, indices = flat.topk(n_keep, sorted=False)
    return torch.zeros_like(flat).scatter(0, indices, values).view_as(acts)


@register("batchtopk")
class BatchTopKSAE(SparseKernelTraining):
    """TopK over the flattened batch in training; a saved threshold at inference."""

    config_class = BatchTopKConfig
    cfg: BatchTopKConfig
    kernel_selection = "batch"

    def __init__(self, cfg: BatchTopKConfig) -> None:
        super().__init__(cfg)
        from sparselens.models.source import parse_dtype

        self.register_buffer("threshold", torch.full(self.threshold_shape(), torch.nan,
                                                     dtype=parse_dtype(cfg.dtype)))

    def threshold_shape(self) -> tuple[int, ...]:
        """One global threshold."""
        return ()

    def batch_select(self, pre: Tensor) -> Tensor:
        """The training-time selection over the whole batch (dense codes)."""
        return batch_topk(pre, self.cfg.k, self.cfg.resolved_token_cap)

    def token_cap(self) -> int | None:
        return self.cfg.resolved_token_cap

    def observed_threshold(self, codes: Tensor) -> Tensor:
        """The smallest positive activation the batch selection kept."""
        return min_positive(codes)

    def training_codes(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pre = self.pre_acts(x)
        codes = self.batch_select(pre)
        ema_update_(self.threshold, self.observed_threshold(codes.detach()),
                    self.cfg.threshold_decay)
        return pre, codes

    def after_sparse_selection(self, fast: kernels.SparseForward) -> None:
        """The kernel path's threshold update: the same running average as `training_codes`,
        from the kept entries' codes (the zeros of the dense matrix are never positive)."""
        ema_update_(self.threshold, min_positive(fast.codes.detach()), self.cfg.threshold_decay)

    def activation(self, pre: Tensor) -> Tensor:
        """JumpReLU with the estimated threshold; per-token TopK before any estimate exists."""
        if bool(torch.isnan(self.threshold).all()):
            return super().activation(pre)
        return cap_per_token(apply_threshold(pre, self.threshold), self.cfg.resolved_token_cap)
