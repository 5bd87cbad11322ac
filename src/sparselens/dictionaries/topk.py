"""TopK SAE (Gao et al., "Scaling and evaluating sparse autoencoders") and what the k-sparse
family shares: per-token top-k selection and the AuxK loss on dead latents.

`TopKBase` holds the shared pieces; `TopKSAE` is the registered ``topk`` variant. The other
k-sparse variants (BatchTopK, Multi-TopK, AbsTopK, ...) derive from `TopKBase`, not from
`TopKSAE`, so a specialised training path for plain TopK is never inherited by a variant
whose selection differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from sparselens.dictionaries import kernels
from sparselens.dictionaries.base import (
    Dictionary,
    DictionaryConfig,
    LossOutput,
    StepContext,
    register,
)
from sparselens.dictionaries.losses import auxk_loss, squared_error


@dataclass
class AuxKConfig(DictionaryConfig):
    k_aux: int | None = None
    """Dead latents used by the AuxK loss; None means d_in // 2 (the paper's choice)."""
    aux_coef: float = 1 / 32
    """Weight of the AuxK loss (the paper's 1/32); 0 disables it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k_aux is not None and self.k_aux <= 0:
            raise ValueError(f"k_aux must be a positive integer or None, got {self.k_aux}")
        if not self.aux_coef >= 0:
            raise ValueError(f"aux_coef must be >= 0, got {self.aux_coef}")

    @property
    def resolved_k_aux(self) -> int:
        return self.k_aux if self.k_aux is not None else max(1, self.d_in // 2)


def check_k(k: object, n_latents: int) -> None:
    """The one rule for `k`, the field every variant with an L0 knob takes (TopK family, MP,
    JumpReLU's target): an integer in 1..n_latents."""
    if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= n_latents:
        raise ValueError(f"k must be an integer in 1..n_latents ({n_latents}), got {k!r}")


@dataclass
class TopKConfig(AuxKConfig):
    k: int = 32
    """Active latents per token."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_k(self.k, self.n_latents)


class AuxKDictionary(Dictionary):
    """A dictionary whose dead latents are revived by the AuxK loss."""

    cfg: AuxKConfig
    auxk_by_magnitude: ClassVar[bool] = False
    """Rank dead latents by |pre| and keep signed values (AbsTopK)."""

    def auxk_terms(self, pre: Tensor, target: Tensor, recon: Tensor,
                   ctx: StepContext, dead_mask: Tensor | None = None) -> dict[str, Tensor]:
        """``{"auxk": aux_coef * AuxK}`` over `dead_mask` (default: the trainer's dead mask)."""
        if self.cfg.aux_coef == 0:
            return {}
        mask = ctx.dead_mask if dead_mask is None else dead_mask
        aux = auxk_loss(pre, target - recon, self.W_dec, mask, self.cfg.resolved_k_aux,
                        by_magnitude=self.auxk_by_magnitude)
        return {"auxk": self.cfg.aux_coef * aux}

    def loss_terms(self, x: Tensor, target: Tensor, pre: Tensor, codes: Tensor, recon: Tensor,
                   ctx: StepContext) -> dict[str, Tensor]:
        return self.auxk_terms(pre, target, recon, ctx)


class TopKBase(AuxKDictionary):
    """Keep the k largest pre-activations (after ReLU) of every token, zero the rest."""

    config_class = TopKConfig
    cfg: TopKConfig

    def select(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        """(values, indices) of the active latents, ``(..., k)`` each."""
        values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.relu(values), indices

    def activation(self, pre: Tensor) -> Tensor:
        values, indices = self.select(pre)
        return torch.zeros_like(pre).scatter_(-1, indices, values)


class SparseKernelTraining(TopKBase):
    """Training through the sparse kernels of `kernels.py`: the loss of the dense base path
    (MSE + AuxK), computed without a dense ``(B, n)`` matrix in the graph.

    A class opts in by setting `kernel_selection` in its own body ("rows": TopK, "magnitude":
    AbsTopK, "batch": BatchTopK); a subclass that does not set it again (say, one that adds loss
    terms) trains through the dense path of its parents, so no loss term is silently dropped.
    Under ``torch.autocast`` the encoder GEMM runs in the autocast dtype (bfloat16: the fast
    mode on CPUs with AVX-512-BF16/AMX and on GPUs); the sparse parts stay float32.
    """

    kernel_selection: ClassVar[str | None] = None
    use_kernel: bool = True
    """Set False on an instance to train through the dense reference path instead."""

    def training_loss(self, x: Tensor, target: Tensor | None = None,
                      ctx: StepContext | None = None) -> LossOutput:
        selection = type(self).__dict__.get("kernel_selection")
        if selection is None or not self.use_kernel or x.ndim != 2:
            return super().training_loss(x, target, ctx)
        ctx = ctx or StepContext()
        target = x if target is None else target
        fast = kernels.sparse_training_forward(
            x, self.W_enc, self.b_enc, self.W_dec, self.b_dec, self.cfg.k, selection=selection,
            pre_encoder_bias=self.cfg.pre_encoder_bias, token_cap=self.token_cap(),
            matmul_dtype=kernels.autocast_matmul_dtype(x.device))
        self.after_sparse_selection(fast)
        recon = fast.recon + self.skip(x) if self.cfg.skip_connection else fast.recon
        terms = {"mse": squared_error(recon, target),
                 **self.sparse_loss_terms(x, target, fast, recon, ctx)}
        loss = sum(terms.values())
        return kernels.SparseLossOutput(loss, recon, fast, terms)  # type: ignore[arg-type]

    def after_sparse_selection(self, fast: kernels.SparseForward) -> None:
        """Hook for state kept from the training selection (BatchTopK's threshold)."""

    def token_cap(self) -> int | None:
        """The most latents a batch selection may give one token (None: no cap)."""
        return None

    def sparse_loss_terms(self, x: Tensor, target: Tensor, fast: kernels.SparseForward,
                          recon: Tensor, ctx: StepContext) -> dict[str, Tensor]:
        """The kernel path's `loss_terms` (from the sparse entries): AuxK on the dead latents.

        A variant with more terms overrides both this and `loss_terms` with the same math, and
        opts in to the kernel only then."""
        return self.dead_auxk_terms(x, target, recon, ctx)

    def dead_auxk_terms(self, x: Tensor, target: Tensor, recon: Tensor,
                        ctx: StepContext) -> dict[str, Tensor]:
        """AuxK from the pre-activations of the dead latents only."""
        if self.cfg.aux_coef == 0:
            return {}
        mask = ctx.dead_mask
        if mask is None or not bool(mask.any()):
            return {"auxk": recon.new_zeros(())}
        dead = mask.nonzero().squeeze(1)
        centre = self.b_dec if self.cfg.pre_encoder_bias else None
        pre = kernels.pre_acts_of(x, self.W_enc, self.b_enc, centre, dead)
        everyone = torch.ones_like(dead, dtype=torch.bool)
        aux = auxk_loss(pre, target - recon, self.W_dec.index_select(0, dead), everyone,
                        self.cfg.resolved_k_aux, by_magnitude=self.auxk_by_magnitude)
        return {"auxk": self.cfg.aux_coef * aux}


@register("topk")
class TopKSAE(SparseKernelTraining):
    """TopK SAE: ``f = TopK(ReLU(W_enc (x - b_dec) + b_enc))``, loss MSE + AuxK/32."""

    config_class = TopKConfig
    cfg: TopKConfig
    kernel_selection = "rows"
