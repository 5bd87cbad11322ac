"""The shared dictionary: an affine encoder, a sparsifying activation, a linear decoder.

Every variant (TopK, JumpReLU, Gated, ...) is a short subclass that overrides only what
differs, usually `activation` and `loss_terms`, and `training_codes` where the paper trains
with a batch-dependent or stochastic encoder (inference through `encode`/`forward` is always
per token). Shared machinery lives here once: decoder normalisation with the parallel
gradient removed, input-scale folding, saving and loading, and a registry so configs and the
CLI can name a variant. docs/dictionaries.md describes every variant.

Shapes: inputs are ``(..., d_in)``; codes are ``(..., n_latents)``; outputs ``(..., d_out)``.
A sparse autoencoder has ``d_out == d_in`` and subtracts ``b_dec`` before encoding
(`pre_encoder_bias`); a transcoder maps one site to another and does not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from sparselens.core.dtypes import parse_dtype
from sparselens.dictionaries.losses import squared_error
from sparselens.dictionaries.step import LossOutput, StepContext

PROJECTION_ROWS = 512
"""Decoder rows projected at a time: both passes over a block run while it is in cache."""

REGISTRY: dict[str, type[Dictionary]] = {}


def register(name: str):
    """Class decorator: make a variant selectable by `name` in configs and the CLI."""

    def wrap(cls: type[Dictionary]) -> type[Dictionary]:
        if name in REGISTRY and REGISTRY[name] is not cls:
            raise ValueError(f"architecture {name!r} registered twice")
        cls.architecture = name
        REGISTRY[name] = cls
        return cls

    return wrap


@dataclass
class DictionaryConfig:
    """Widths and the choices every dictionary shares. Variants subclass to add fields."""

    d_in: int
    """Width of the input activations."""
    n_latents: int
    """Number of dictionary atoms (latents)."""
    d_out: int | None = None
    """Width of the reconstruction target; None means d_in (an autoencoder)."""
    pre_encoder_bias: bool = True
    """Subtract b_dec from the input before encoding (autoencoders; off for transcoders)."""
    unit_norm_decoder: bool = True
    """Keep decoder rows at unit norm and remove the gradient component parallel to them."""
    input_scale: float = 1.0
    """Multiplier applied to raw inputs (norm scaling); folded into the weights on save."""
    output_scale: float = 1.0
    """Multiplier applied to raw targets; equals input_scale for autoencoders."""
    skip_connection: bool = False
    """Add a learned linear path from input to output (skip transcoders)."""
    dtype: str = "float32"
    """Parameter dtype."""
    hookpoint: str | None = None
    """Where the input activations come from (informational, saved with the checkpoint)."""
    target_hookpoint: str | None = None
    """Where the reconstruction target comes from, if not the input (transcoders)."""
    model: str | None = None
    """The model the activations come from (informational)."""

    def __post_init__(self) -> None:
        if self.d_out is None:
            self.d_out = self.d_in
        for name in ("d_in", "n_latents", "d_out"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("input_scale", "output_scale"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if self.pre_encoder_bias and self.input_scale != self.output_scale:
            raise ValueError("an autoencoder (pre_encoder_bias=True) needs input_scale == "
                             f"output_scale, got {self.input_scale} and {self.output_scale}")
        if self.pre_encoder_bias and self.d_out != self.d_in:
            raise ValueError(f"pre_encoder_bias needs d_out == d_in, got {self.d_out} != "
                             f"{self.d_in}; set pre_encoder_bias=False for a transcoder")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DictionaryConfig:
        """Build from a dict, refusing unknown keys with the list of known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown} for {cls.__name__}; "
                             f"known fields: {sorted(known)}")
        return cls(**data)


class Dictionary(nn.Module):
    """Base class: ``codes = activation(pre_acts(x))``, ``x_hat = codes @ W_dec + b_dec``."""

    config_class: ClassVar[type[DictionaryConfig]] = DictionaryConfig
    architecture: ClassVar[str] = "base"
    added_buffers: ClassVar[tuple[str, ...]] = ()
    """Buffers added after files of this architecture were first saved: a file without one
    loads with the buffer's initial value (files written before it existed stay readable)."""

    def __init__(self, cfg: DictionaryConfig) -> None:
        super().__init__()
        if not isinstance(cfg, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, "
                            f"got {type(cfg).__name__}")
        self.cfg = cfg
        dtype = parse_dtype(cfg.dtype)
        d_out = cfg.d_out
        assert d_out is not None
        w_dec = torch.randn(cfg.n_latents, d_out, dtype=dtype)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)
        # Encoder initialised as the decoder's transpose (Gao et al.) when shapes allow.
        w_enc = w_dec.T.clone() if d_out == cfg.d_in else torch.randn(cfg.d_in, cfg.n_latents,
                                                                      dtype=dtype) / cfg.d_in**0.5
        self.W_enc = nn.Parameter(w_enc.contiguous())
        self.b_enc = nn.Parameter(torch.zeros(cfg.n_latents, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(d_out, dtype=dtype))
        if cfg.skip_connection:
            self.W_skip = nn.Parameter(torch.zeros(cfg.d_in, d_out, dtype=dtype))

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[Dictionary]:
        """Eval mode inside the block, the previous mode after it (even on error): evaluation
        and interpretation run on dictionaries that may be in the middle of training."""
        was_training = self.training
        self.eval()
        try:
            yield self
        finally:
            self.train(was_training)

    # ---- the forward pass, split so that variants override one piece ----

    def scale_input(self, x: Tensor) -> Tensor:
        return x * self.cfg.input_scale if self.cfg.input_scale != 1.0 else x

    def centre(self, x: Tensor) -> Tensor:
        """The encoder's view of (scaled) input: ``x - b_dec`` with a pre-encoder bias."""
        return x - self.b_dec if self.cfg.pre_encoder_bias else x

    def pre_acts(self, x: Tensor) -> Tensor:
        """Affine encoder on (already scaled) input."""
        return self.centre(x) @ self.W_enc + self.b_enc

    def activation(self, pre: Tensor) -> Tensor:
        """The sparsifying nonlinearity used at inference; the base is a plain ReLU."""
        return torch.relu(pre)

    def encode_scaled(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(pre-activations, inference codes) for already scaled input.

        Variants whose encoder is not "affine then pointwise" (matching pursuit) override this.
        """
        pre = self.pre_acts(x)
        return pre, self.activation(pre)

    def training_codes(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(pre-activations, codes) used by the training loss.

        The same as inference unless the paper trains with something that depends on the
        whole batch (BatchTopK, Feature Choice) or is stochastic (variational). Inference
        (`encode`, `forward`) never depends on the batch, so codes of a token are the same
        whatever it is batched with, in train or eval mode.
        """
        return self.encode_scaled(x)

    def encode(self, x: Tensor) -> Tensor:
        """Dense codes ``(..., n_latents)`` for raw inputs."""
        return self.encode_scaled(self.scale_input(x))[1]

    def decode_scaled(self, codes: Tensor) -> Tensor:
        """Reconstruction in scaled output space (no skip path)."""
        return codes @ self.W_dec + self.b_dec

    def decode(self, codes: Tensor) -> Tensor:
        """Reconstruction in raw (unscaled) target space."""
        out = self.decode_scaled(codes)
        return out / self.cfg.output_scale if self.cfg.output_scale != 1.0 else out

    def skip(self, x_scaled: Tensor) -> Tensor | None:
        """The linear skip path in scaled output space, or None without one."""
        return x_scaled @ self.W_skip if self.cfg.skip_connection else None

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction (or transcoded output) of raw inputs in raw output space."""
        if not self.cfg.skip_connection:
            return self.decode(self.encode(x))
        xs = self.scale_input(x)
        out = self.decode_scaled(self.encode_scaled(xs)[1]) + self.skip(xs)
        return out / self.cfg.output_scale

    # ---- training ----

    def loss_terms(self, x: Tensor, target: Tensor, pre: Tensor, codes: Tensor, recon: Tensor,
                   ctx: StepContext) -> dict[str, Tensor]:
        """Extra loss terms beyond reconstruction (sparsity penalties, auxiliary losses)."""
        return {}

    def training_loss(self, x: Tensor, target: Tensor | None = None,
                      ctx: StepContext | None = None) -> LossOutput:
        """Loss on already *scaled* inputs/targets (the trainer scales once per batch).

        Reconstruction loss is the squared error norm per token, averaged over tokens.
        """
        ctx = ctx or StepContext()
        target = x if target is None else target
        pre, codes = self.training_codes(x)
        recon = self.decode_scaled(codes)
        if self.cfg.skip_connection:
            recon = recon + self.skip(x)
        extra = self.loss_terms(x, target, pre, codes, recon, ctx)
        terms = {"mse": squared_error(recon, target), **extra}
        loss = sum(terms.values())
        return LossOutput(loss=loss, recon=recon, codes=codes, terms=terms)  # type: ignore[arg-type]

    @torch.no_grad()
    def initialize_from_data(self, x: Tensor, target: Tensor | None = None) -> None:
        """Data-dependent initialisation on a sample of scaled inputs; default sets b_dec to the
        geometric median of the targets (Gao et al.)."""
        from sparselens.dictionaries.init import geometric_median

        target = x if target is None else target
        self.b_dec.copy_(geometric_median(target.float()).to(self.b_dec.dtype))

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Project out the gradient component along each unit-norm decoder row.

        Two passes over ``W_dec`` (one fused row-wise dot product, one in-place update) instead
        of materialising ``g * w`` and the projection: a measurable part of a sparse step.
        """
        if not self.cfg.unit_norm_decoder or self.W_dec.grad is None:
            return
        w, g = self.W_dec, self.W_dec.grad
        for start in range(0, w.shape[0], PROJECTION_ROWS):
            rows, grads = w[start:start + PROJECTION_ROWS], g[start:start + PROJECTION_ROWS]
            grads.addcmul_(torch.linalg.vecdot(grads, rows).unsqueeze(-1), rows, value=-1)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale decoder rows to unit norm in place (one pass for the norms, one to divide)."""
        if self.cfg.unit_norm_decoder:
            norms = torch.linalg.vector_norm(self.W_dec, dim=-1, keepdim=True)
            self.W_dec.div_(norms.clamp_min_(1e-8))

    def before_optimizer_step(self, ctx: StepContext) -> None:
        self.remove_parallel_decoder_grad()

    def after_optimizer_step(self, ctx: StepContext) -> None:
        self.normalize_decoder()

    # ---- inference-time state and persistence ----

    @torch.no_grad()
    def fold_scales(self) -> None:
        """Fold input/output scaling into the weights so the dictionary works on raw data.

        With s the input scale: ``(s x - b) W = (x - b/s)(s W)``; codes are unchanged, so
        thresholds stay valid. The output scale t divides the decoder: ``x = (c W_dec + b)/t``.
        """
        s, t = self.cfg.input_scale, self.cfg.output_scale
        if s == 1.0 and t == 1.0:
            return
        self.scale_encoder_(s)
        # b_dec is the output bias in t-scaled space; for an autoencoder it is also subtracted
        # from the s-scaled input, and there s == t, so dividing by t serves both roles.
        self.b_dec.div_(t)
        self.scale_decoder_(1.0 / t)
        if self.cfg.skip_connection:
            self.W_skip.mul_(s / t)
        self.fold_extra_scales(s, t)
        self.cfg.input_scale = 1.0
        self.cfg.output_scale = 1.0

    def scale_encoder_(self, factor: float) -> None:
        """Multiply the encoder weights in place (variants with a factorised encoder override)."""
        self.W_enc.mul_(factor)

    def scale_decoder_(self, factor: float) -> None:
        """Multiply the decoder atoms in place (variants with a derived decoder override)."""
        self.W_dec.mul_(factor)

    def fold_extra_scales(self, s: float, t: float) -> None:
        """Variants with extra input- or output-space parameters fold them here."""


def build(architecture: str, **config: Any) -> Dictionary:
    """Make a dictionary by registry name: ``build("topk", d_in=640, n_latents=4096, k=32)``.

    The built-in variants are registered: importing this module imports its package first,
    and the package (``sparselens/dictionaries/__init__.py``) imports every variant."""
    if architecture not in REGISTRY:
        raise ValueError(f"unknown architecture {architecture!r}; known: {sorted(REGISTRY)}")
    cls = REGISTRY[architecture]
    return cls(cls.config_class.from_dict(config))
