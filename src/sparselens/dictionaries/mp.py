"""Matching Pursuit SAE (Costa, Fel, Lubana, Tolooshams and Ba, "From Flat to Hierarchical:
Extracting Sparse Representations with Matching Pursuit", 2025).

The encoder is matching pursuit over the unit-norm decoder atoms, unrolled for `k` steps
(there is no separate encoder matrix):

    r_0 = x - b_dec,  z = 0
    for t = 1..k:  c = r_{t-1} W_decᵀ;  j = argmax_i c_i;  z_j += c_j;  r_t = r_{t-1} - c_j W_dec,j

and ``x̂ = z W_dec + b_dec``. Gradients flow through the whole unrolled loop (the selected
index is piecewise constant). Each step explains away what the chosen atom covers, so later
atoms can refine earlier ones: conditional, hierarchical structure a one-shot encoder cannot
express. At inference the pursuit can stop adaptively per token once the residual norm is
below ``residual_threshold`` (option), up to ``max_inference_steps``.

Input scaling is not folded into the weights: MP codes are projections onto unit atoms, so
they scale with the input; ``input_scale`` stays in the saved config and is applied on encode.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from sparselens.dictionaries.base import Dictionary, DictionaryConfig, register
from sparselens.dictionaries.topk import check_k


@dataclass
class MPConfig(DictionaryConfig):
    k: int = 32
    """Matching pursuit steps (one atom selected per step) in training and by default."""
    residual_threshold: float | None = None
    """Inference option: stop a token's pursuit once its residual norm is below this (in
    scaled units)."""
    max_inference_steps: int | None = None
    """Inference steps when residual_threshold is set; None means k."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.unit_norm_decoder:
            raise ValueError("matching pursuit needs unit-norm atoms; keep unit_norm_decoder=True")
        if self.d_out != self.d_in:
            raise ValueError("matching pursuit decomposes its input over the decoder atoms, so "
                             f"d_out must equal d_in (got {self.d_out} and {self.d_in})")
        check_k(self.k, self.n_latents)
        if self.residual_threshold is not None and not self.residual_threshold >= 0:
            raise ValueError(f"residual_threshold must be >= 0, got {self.residual_threshold}")
        if self.max_inference_steps is not None and self.max_inference_steps <= 0:
            raise ValueError(f"max_inference_steps must be positive, got "
                             f"{self.max_inference_steps}")


def matching_pursuit(residual: Tensor, atoms: Tensor, steps: int,
                     stop_below: float | None = None) -> Tensor:
    """Codes ``(B, n)`` from `steps` rounds of matching pursuit of `residual` over unit `atoms`.

    With `stop_below`, a token whose residual norm is below it selects nothing more.
    """
    codes = residual.new_zeros(residual.shape[:-1] + (atoms.shape[0],))
    for _ in range(steps):
        value, index = (residual @ atoms.T).max(dim=-1, keepdim=True)
        if stop_below is not None:
            active = residual.norm(dim=-1, keepdim=True) >= stop_below
            if not bool(active.any()):
                break
            value = value * active.to(value.dtype)
        value = value.to(codes.dtype)  # under bf16 autocast the scores are bf16
        codes = codes.scatter_add(-1, index, value)
        residual = residual - value * atoms[index.squeeze(-1)]
    return codes


@register("mp")
class MatchingPursuitSAE(Dictionary):
    """Codes by matching pursuit over the decoder; no encoder weights."""

    config_class = MPConfig
    cfg: MPConfig

    def __init__(self, cfg: MPConfig) -> None:
        super().__init__(cfg)
        del self.W_enc, self.b_enc

    def pre_acts(self, x: Tensor) -> Tensor:
        """Correlations of the input with every atom (the pursuit's first scores)."""
        return self.centre(x) @ self.W_dec.T

    def pursue(self, x: Tensor, adaptive: bool) -> tuple[Tensor, Tensor]:
        """(codes, codes): the pursuit has no pre-activations apart from its codes."""
        cfg = self.cfg
        residual = self.centre(x)
        if adaptive and cfg.residual_threshold is not None:
            steps = cfg.max_inference_steps or cfg.k
            codes = matching_pursuit(residual, self.W_dec, steps, cfg.residual_threshold)
        else:
            codes = matching_pursuit(residual, self.W_dec, cfg.k)
        return codes, codes

    def encode_scaled(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.pursue(x, adaptive=True)

    def training_codes(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.pursue(x, adaptive=False)

    def fold_scales(self) -> None:
        """Keep the scales in the config: MP codes cannot be made scale-free by folding."""
