"""JumpReLU SAE (Rajamanoharan et al., "Jumping Ahead: Improving Reconstruction Fidelity with
JumpReLU Sparse Autoencoders", 2024).

    π(x) = W_enc (x - b_dec) + b_enc       (the pre-encoder bias: ours, see below)
    f(x) = JumpReLU_θ(π(x)) = π(x) ⊙ H(π(x) - θ)
    L    = ||x - x̂||² + λ ||f(x)||_0,  ||f||_0 = Σ_i H(π_i(x) - θ_i)

θ (the Parameter ``threshold``, shape ``(n,)``) is trained directly and clamped at 0 after
each step. Its gradients are the paper's straight-through pseudo-derivatives with a rectangle
kernel of bandwidth ε, for both the activation and the Heaviside in the L0 (see `ste`);
nothing flows to π through the Heaviside.

Units. The paper's ε = θ₀ = 0.001 and its λ belong to inputs normalised to unit mean squared
norm (Gemma Scope); the trainer normalises to mean norm sqrt(d), which makes pre-activations
about sqrt(d) times larger, so taken literally they give a kernel window too narrow to move θ
and a penalty too weak to matter: the SAE stays dense. ``bandwidth``, ``initial_threshold``
and ``sparsity_coef`` are therefore in the paper's units, converted with ``code_unit`` u (the
RMS norm of the initialisation sample unless given): ε·u, θ₀·u, λ·u².

Target L0 (``k``, an option; the paper sweeps λ instead): the L0 term becomes
``μ (L0_batch / k - 1)² + λ_I L0`` (μ = ``target_coef`` · u², the form of later JumpReLU
work, plus λ_I, the buffer ``l0_integral``, the paper's λ found by integrating the L0 error:
a PI controller, since the quadratic term alone needs a lasting error to push), through the
same pseudo-derivative, and θ starts at each latent's (1 - k/n) quantile of
the pre-activations on the initialisation sample, so L0 starts at the target instead of near
n/2 and θ has only the encoder's drift to follow.

Two defaults differ from the first version, which reached 2.6x TopK's FVU at the same L0 on
gemma-3-270m (docs/dictionaries.md, "JumpReLU"): both let the reconstruction, not the drift
of the input's mean or the L0 controller, decide each latent's threshold.

- ``pre_encoder_bias=True`` (*ours*; the paper encodes x itself). The residual stream has a
  mean far larger than its spread; without centring, every change of W_enc moves each
  latent's pre-activations by (ΔW_enc)ᵀ mean(x), a shift that carries many latents' whole
  distribution past their thresholds, where neither θ nor W_enc gets a gradient again: 40-48%
  of 256 latents ended dead. Centred on b_dec the same change moves them by (ΔW_enc)ᵀ (x -
  b_dec), and 1-5% die. (The two forms are the same function class, W_enc b_dec folds into
  b_enc; only the training dynamics differ.) Gemma Scope files load with it off, as stored.
- ``target_coef`` μ = 0.1 (was 10). Its θ-gradient, 2μ/k (L0/k - 1) times the kernel count,
  was 10^2-10^4 times every other gradient: Adam, normalising each θ_i on its own, moved all
  thresholds by the sign of the batch's L0 error alone (the reconstruction's term never
  counted), and the global gradient clip divided every weight gradient by that norm. At 0.1
  the two terms are comparable and L0 still ends within 5% of k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sparselens.dictionaries.base import StepContext, register
from sparselens.dictionaries.penalized import PenalizedDictionary, PenaltyConfig
from sparselens.dictionaries.ste import heaviside, jumprelu
from sparselens.dictionaries.topk import check_k

QUANTILE_ROWS = 8192
"""At most this many sample tokens are used for the initial per-latent threshold quantiles."""


@dataclass
class JumpReLUConfig(PenaltyConfig):
    pre_encoder_bias: bool = True
    """Subtract b_dec from the input before encoding (ours: the paper does not; without it
    40-48% of the latents died on gemma-3-270m, see the module docstring)."""
    bandwidth: float = 1e-3
    """ε, the width of the rectangle kernel of the pseudo-derivatives, in the paper's units
    (times code_unit in code space); the paper's 0.001."""
    initial_threshold: float = 1e-3
    """Initial θ for every latent in the paper's units (the paper's 0.001); unused with
    k, which starts θ at per-latent quantiles of the data."""
    code_unit: float | None = None
    """u: code-space size of one paper unit. None: the RMS norm of the initialisation sample
    (set once by initialize_from_data, then saved); 1.0 takes the hyperparameters literally."""
    k: int | None = None
    """Option: train to this mean L0 per token (k, as for the TopK family) with the penalty
    target_coef (L0/k - 1)² instead of λ L0 (sparsity_coef is then unused); None: the paper's
    λ L0."""
    target_integral: float = 0.05
    """γ, the integral gain of the target controller: after each step λ_I grows by
    γ · 2μ/k · (L0_batch/k - 1) (clamped at 0), so λ_I takes over the penalty the quadratic
    term would need a persistent L0 error for (0: quadratic term only, which ends 5-15% above
    k)."""
    target_coef: float = 0.1
    """μ, the weight of the target-L0 penalty in the paper's units: small enough that each
    latent's reconstruction term still moves its θ (10 drowned it), large enough to end within
    5% of k (0.03: 8% over, 0.01: 32% over, on gemma-3-270m)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.bandwidth > 0:
            raise ValueError(f"bandwidth must be > 0, got {self.bandwidth}")
        if not self.initial_threshold >= 0:
            raise ValueError(f"initial_threshold must be >= 0, got {self.initial_threshold}")
        if self.code_unit is not None and not (math.isfinite(self.code_unit)
                                               and self.code_unit > 0):
            raise ValueError(f"code_unit must be a positive number or None, got {self.code_unit}")
        if self.k is not None:
            check_k(self.k, self.n_latents)
        if not (math.isfinite(self.target_integral) and self.target_integral >= 0):
            raise ValueError(f"target_integral must be a number >= 0, got {self.target_integral}")
        if not (math.isfinite(self.target_coef) and self.target_coef > 0):
            raise ValueError(f"target_coef must be a positive number, got {self.target_coef}")


@register("jumprelu")
class JumpReLUSAE(PenalizedDictionary):
    """A learned threshold per latent; L0 penalty through straight-through estimators."""

    config_class = JumpReLUConfig
    cfg: JumpReLUConfig
    added_buffers = ("l0_integral",)  # the target controller's integral term came later

    def __init__(self, cfg: JumpReLUConfig) -> None:
        super().__init__(cfg)
        # θ is stored in the paper's units (θ_code = u · threshold), so that Adam moves it at
        # the paper's pace relative to the codes; saving folds u in (see fold_scales).
        self.threshold = nn.Parameter(torch.full_like(self.b_enc, cfg.initial_threshold))
        if cfg.k is not None:  # the target controller's integral term λ_I (paper units)
            self.register_buffer("l0_integral", torch.zeros((), dtype=self.b_enc.dtype))
        self._l0_error: Tensor | None = None

    @property
    def unit(self) -> float:
        """u, the code-space size of one of the paper's units (1 until initialisation)."""
        return self.cfg.code_unit if self.cfg.code_unit is not None else 1.0

    @property
    def bandwidth(self) -> float:
        return self.cfg.bandwidth * self.unit

    def code_threshold(self) -> Tensor:
        """θ in code units."""
        return self.threshold * self.unit if self.unit != 1.0 else self.threshold

    def activation(self, pre: Tensor) -> Tensor:
        return jumprelu(pre, self.code_threshold(), self.bandwidth)

    def l0(self, pre: Tensor) -> Tensor:
        """Mean number of active latents per token, differentiable in θ."""
        return heaviside(pre, self.code_threshold(), self.bandwidth).sum(-1).mean()

    def sparsity_coef(self, ctx: StepContext) -> float:
        """λ at this step in code units: the warmed-up sparsity_coef · u²."""
        return super().sparsity_coef(ctx) * self.unit ** 2

    def loss_terms(self, x: Tensor, target: Tensor, pre: Tensor, codes: Tensor, recon: Tensor,
                   ctx: StepContext) -> dict[str, Tensor]:
        l0 = self.l0(pre)
        if self.cfg.k is None:
            return {"l0": self.sparsity_coef(ctx) * l0}
        coef = self.cfg.target_coef * self.unit ** 2
        error = l0 / self.cfg.k - 1.0
        self._l0_error = error.detach()
        return {"l0_target": coef * error.pow(2) + self.l0_integral * self.unit ** 2 * l0}

    @torch.no_grad()
    def initialize_from_data(self, x: Tensor, target: Tensor | None = None) -> None:
        """Measure the unit (RMS norm of the sample) if not given; set θ₀ in code units, or
        with a target L0 at each latent's (1 - k/n) quantile of the pre-activations."""
        super().initialize_from_data(x, target)
        if self.cfg.code_unit is None:
            self.cfg.code_unit = float(x.float().pow(2).sum(-1).mean().sqrt()) or 1.0
        if self.cfg.k is None:
            self.threshold.fill_(self.cfg.initial_threshold)
            return
        pre = self.pre_acts(x[:QUANTILE_ROWS]).float()
        rank = max(1, math.ceil(pre.shape[0] * (1.0 - self.cfg.k / self.cfg.n_latents)))
        quantile = pre.kthvalue(rank, dim=0).values
        self.threshold.copy_((quantile.clamp_min(0) / self.unit).to(self.threshold.dtype))

    @torch.no_grad()
    def fold_scales(self) -> None:
        """Fold the input/output scales, then the unit u: afterwards ``threshold``, ε, θ₀ and λ
        are in code units and code_unit is 1 (what other libraries and readers expect)."""
        super().fold_scales()
        u = self.unit
        if u == 1.0:
            return
        self.threshold.mul_(u)
        cfg = self.cfg
        cfg.bandwidth, cfg.initial_threshold = cfg.bandwidth * u, cfg.initial_threshold * u
        cfg.sparsity_coef, cfg.target_coef = cfg.sparsity_coef * u ** 2, cfg.target_coef * u ** 2
        if cfg.k is not None:
            self.l0_integral.mul_(u ** 2)
        cfg.code_unit = 1.0

    def after_optimizer_step(self, ctx: StepContext) -> None:
        super().after_optimizer_step(ctx)
        with torch.no_grad():
            self.threshold.clamp_(min=0.0)
            if self.cfg.k is not None and self._l0_error is not None:
                gain = self.cfg.target_integral * 2 * self.cfg.target_coef / self.cfg.k
                self.l0_integral.add_(gain * self._l0_error).clamp_(min=0.0)
                self._l0_error = None
