"""Edits: what to change at a hookpoint during a forward pass (and during `generate`).

Each edit is a small frozen dataclass that says *what* (add a latent's decoder direction,
clamp a latent, ablate latents, add a dense vector, zero a site) and *where* (a dictionary, or a
hookpoint for dense edits; optionally some token positions). The lens decides *when*: it calls
`Edit.apply` at the right hookpoint of every forward pass inside ``with lens.edit(...)``.

Dictionary edits keep the dictionary's error term: the new activation is
``act + decode(edited codes) - decode(codes)``, so an edit that changes no code changes
nothing, and whatever the dictionary fails to reconstruct passes through untouched.

``positions`` are absolute token positions (0 is the first token of the prompt); ``None`` edits
every position, including tokens generated later. Special tokens (BOS, padding) are left alone
unless ``include_special`` is set: their activations are outliers no dictionary was trained on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from sparselens.lens.attached import Attached


@dataclass(frozen=True)
class Edit:
    """Base of every edit: where along the sequence it applies."""

    positions: Sequence[int] | None = field(default=None, kw_only=True)
    """Absolute token positions to edit; None edits every position (generated ones too)."""
    include_special: bool = field(default=False, kw_only=True)
    """Also edit special tokens (BOS, EOS, padding)."""

    def check(self, target: Attached | None) -> None:
        """Validate against the dictionary (or None for a dense edit) before any forward."""
        if self.positions is not None and any(p < 0 for p in self.positions):
            raise ValueError(f"{type(self).__name__}: positions must be >= 0, got "
                             f"{list(self.positions)}")

    def apply(self, target: Attached | None, x: Tensor, act: Tensor) -> Tensor:
        """The edited activation at every position (the lens masks positions afterwards).

        `x` is the activation where the dictionary reads (equal to `act` for an autoencoder);
        `act` is the one being replaced.
        """
        raise NotImplementedError


def _finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


@dataclass(frozen=True)
class AddLatent(Edit):
    """Add ``coef`` times a latent's decoder direction (steering with a feature)."""

    dictionary: str
    latent: int
    coef: float

    def check(self, target: Attached | None) -> None:
        super().check(target)
        assert target is not None
        target.check_latent(self.latent)
        _finite("coef", self.coef)

    def apply(self, target: Attached | None, x: Tensor, act: Tensor) -> Tensor:
        assert target is not None
        return act + (self.coef * target.direction(self.latent)).to(act.dtype)


def _recode(target: Attached, x: Tensor, act: Tensor, latents: Sequence[int],
            values: Tensor) -> Tensor:
    """``act + decode(codes with latents set to values) - decode(codes)``."""
    codes = target.codes(x)
    edited = codes.clone()
    edited[..., list(latents)] = values.to(codes.dtype)
    return act + (target.decode(edited) - target.decode(codes)).to(act.dtype)


@dataclass(frozen=True)
class ClampLatent(Edit):
    """Set a latent to a fixed activation (encode, set, decode, keep the error term)."""

    dictionary: str
    latent: int
    value: float

    def check(self, target: Attached | None) -> None:
        super().check(target)
        assert target is not None
        target.check_latent(self.latent)
        _finite("value", self.value)

    def apply(self, target: Attached | None, x: Tensor, act: Tensor) -> Tensor:
        assert target is not None
        return _recode(target, x, act, [self.latent], torch.tensor(self.value))


@dataclass(frozen=True)
class AblateLatents(Edit):
    """Zero latents, or set them to their mean activation (mean ablation)."""

    dictionary: str
    latents: Sequence[int]
    mode: Literal["zero", "mean"] = "zero"
    means: Tensor | None = None
    """``(n_latents,)`` mean activations, needed for ``mode="mean"``."""

    def check(self, target: Attached | None) -> None:
        super().check(target)
        assert target is not None
        if len(self.latents) == 0:
            raise ValueError("AblateLatents needs at least one latent")
        for latent in self.latents:
            target.check_latent(latent)
        if self.mode not in ("zero", "mean"):
            raise ValueError(f"ablation mode must be 'zero' or 'mean', got {self.mode!r}")
        if self.mode == "mean" and (self.means is None
                                    or tuple(self.means.shape) != (target.n_latents,)):
            raise ValueError(f"mean ablation needs means= of shape ({target.n_latents},), e.g. "
                             "lens.mean_codes(texts)[name]")

    def apply(self, target: Attached | None, x: Tensor, act: Tensor) -> Tensor:
        assert target is not None
        index = torch.as_tensor(list(self.latents), dtype=torch.long)
        values = (torch.zeros(len(index)) if self.mode == "zero"
                  else self.means.detach().cpu()[index])  # type: ignore[union-attr]
        return _recode(target, x, act, list(self.latents), values.to(x.device))


@dataclass(frozen=True)
class AddVector(Edit):
    """Add a dense vector at a hookpoint (contrastive activation addition and the like); a
    ``(B, d)`` tensor adds a different vector to each batch row (one pass for many steers)."""

    hookpoint: str
    vector: Tensor
    coef: float = 1.0

    def check(self, target: Attached | None) -> None:
        super().check(target)
        _finite("coef", self.coef)
        if self.vector.ndim not in (1, 2):
            raise ValueError("AddVector needs a vector (d,) or one per batch row (B, d), got "
                             f"shape {tuple(self.vector.shape)}")
        if not torch.isfinite(self.vector).all():
            raise ValueError("AddVector's vector has NaN or infinite entries")

    def apply(self, target: Attached | None, x: Tensor, act: Tensor) -> Tensor:
        vector = self.vector
        if act.shape[-1] != vector.shape[-1]:
            raise ValueError(f"AddVector at {self.hookpoint!r}: the vector has "
                             f"{vector.shape[-1]} entries, the activation {act.shape[-1]}")
        if vector.ndim == 2:  # one vector per batch row: (B, d) -> (B, 1, d)
            if vector.shape[0] != act.shape[0]:
                raise ValueError(f"AddVector at {self.hookpoint!r}: {vector.shape[0]} vectors "
                                 f"for a batch of {act.shape[0]}")
            vector = vector.reshape(vector.shape[0], *([1] * (act.ndim - 2)), vector.shape[1])
        return act + (self.coef * vector).to(device=act.device, dtype=act.dtype)


@dataclass(frozen=True)
class ZeroAblate(Edit):
    """Replace the whole activation at a hookpoint by zeros (the loss-recovered baseline)."""

    hookpoint: str

    def apply(self, target: Attached | None, x: Tensor, act: Tensor) -> Tensor:
        return torch.zeros_like(act)


@dataclass(frozen=True)
class SetActivation(Edit):
    """Replace the activation at a hookpoint by a given ``(B, L, d)`` tensor (one forward pass
    over inputs of that shape; e.g. a crosscoder's reconstruction of one of its sources)."""

    hookpoint: str
    value: Tensor

    def apply(self, target: Attached | None, x: Tensor, act: Tensor) -> Tensor:
        if self.value.shape != act.shape:
            raise ValueError(f"SetActivation at {self.hookpoint!r}: the value has shape "
                             f"{tuple(self.value.shape)}, the activation {tuple(act.shape)}")
        return self.value.to(device=act.device, dtype=act.dtype)


@dataclass(frozen=True)
class Splice(Edit):
    """Replace the activation by the dictionary's output, optionally plus its error term
    (``act - output``, which gives the original back up to float rounding: a check that the
    splice itself is faithful)."""

    dictionary: str
    keep_error: bool = False

    def apply(self, target: Attached | None, x: Tensor, act: Tensor) -> Tensor:
        assert target is not None
        recon = target.reconstruct(x)
        if self.keep_error:
            recon = recon + (act.to(recon.dtype) - recon)
        return recon.to(act.dtype)
