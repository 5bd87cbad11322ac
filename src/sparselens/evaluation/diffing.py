"""Model diffing with a two-source crosscoder: which latents belong to one model only, and
which only look that way.

A crosscoder trained on the same hookpoint of models A and B gives every latent j a decoder
direction per model, d_j,A and d_j,B. Lindsey et al. read model specificity off their norms,
the relative norm ``Δ_j = ½ ((||d_j,B|| − ||d_j,A||) / max(||d_j,A||, ||d_j,B||) + 1)``:
0 means only A writes the latent, 1 only B, ½ both equally. Following Minder et al.
("Overcoming Sparsity Artifacts in Crosscoders to Interpret Chat-Tuning", 2025), a latent is
specific when Δ ≤ 0.1 or Δ ≥ 0.9 and shared when 0.4 ≤ Δ ≤ 0.6.

A small norm in model A does not prove the concept is absent from A: the sparsity objective can
shrink a weakly used decoder to zero, or another latent can carry the same direction in A.
*Latent Scaling* measures it instead. For a latent j specific to model S with direction
v = d_j,S, and each model m, the least-squares scale

    β_j^m = argmin_β Σ_x ||β f_j(x) v − y^m(x)||² = Σ_x f_j(x) ⟨v, y^m(x)⟩ / (||v||² Σ_x f_j(x)²)

says how much of v, in proportion to the latent's activation, the data y^m holds. Two targets:
the *error* ``y = x_m − x̂_m + f_j d_j,m`` (the activation minus the reconstruction by every
other latent) and the *reconstruction* ``y = x̂_m``. The ratios ``ν^ε = β^ε_other / β^ε_S`` and
``ν^r = β^r_other / β^r_S`` near 0 mean the concept really is absent from the other model; a
large ν^ε means it is there but the decoder shrank (Complete Shrinkage), a large ν^r that other
latents reconstruct it (Latent Decoupling). Everything is computed in the crosscoder's
normalised space, where its decoder norms are compared.

Norms miss a second kind of difference: a concept both models have but represent differently.
A crosscoder then keeps one latent with two decoder directions of similar norm that point
apart (Lindsey et al. plot this cosine for shared latents; most are near 1). A latent both
models write whose decoder cosine ``cos(d_j,A, d_j,B)`` is below ``changed_cosine`` is reported
as *changed*. A brief fine-tune that shifts how a model represents some tokens shows up this
way: one latent per affected concept carries the shift in its B decoder, because splitting it
into a shared latent plus a B-only one would cost an extra active latent on every such token.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from sparselens.data.batch import ActivationBatch
from sparselens.dictionaries.crosscoder import Crosscoder
from sparselens.evaluation.per_source import stacked_inputs


@dataclass
class DiffThresholds:
    """Where the lines between shared, specific and only-apparently-specific latents are."""

    specific: float = 0.1
    """A latent is specific when its relative norm is within this of 0 or 1."""
    shared: float = 0.1
    """A latent is shared when its relative norm is within this of 0.5."""
    present_ratio: float = 0.5
    """A specific latent is flagged as only apparently specific when the other model holds at
    least this fraction of it (ν^ε or ν^r at or above this)."""
    min_firings: int = 5
    """Latents that fire fewer times get no Latent Scaling verdict (too little data) and are
    never reported as changed."""
    changed_cosine: float = 0.5
    """A latent that is not specific is changed when the cosine between its two decoder
    directions is below this."""

    def __post_init__(self) -> None:
        if not (0 < self.specific < 0.5 and 0 <= self.shared < 0.5):
            raise ValueError("thresholds.specific must be in (0, 0.5) and thresholds.shared in "
                             f"[0, 0.5), got {self.specific} and {self.shared}")
        if not -1.0 <= self.changed_cosine <= 1.0:
            raise ValueError("thresholds.changed_cosine must be in [-1, 1], got "
                             f"{self.changed_cosine}")
        if not self.present_ratio > 0 or self.min_firings < 1:
            raise ValueError("thresholds.present_ratio must be positive and "
                             f"thresholds.min_firings >= 1, got {self.present_ratio} and "
                             f"{self.min_firings}")


def relative_norm(norms: Tensor) -> Tensor:
    """Δ per latent from ``(n, 2)`` decoder norms (A, B): 0 = only A, 1 = only B; NaN if both
    are zero."""
    if norms.ndim != 2 or norms.shape[1] != 2:
        raise ValueError(f"relative norms compare two sources; got norms of shape "
                         f"{tuple(norms.shape)}")
    a, b = norms[:, 0], norms[:, 1]
    return 0.5 * ((b - a) / torch.maximum(a, b) + 1.0)


def decoder_cosine(decoders: Tensor) -> Tensor:
    """Cosine between each latent's two decoder directions, from ``(n, 2, width)``; NaN where
    either is zero."""
    a, b = decoders[:, 0].double(), decoders[:, 1].double()
    norms = a.norm(dim=-1) * b.norm(dim=-1)
    cos = (a * b).sum(-1) / norms.clamp_min(1e-300)
    return torch.where(norms > 0, cos, torch.full_like(cos, torch.nan)).float()


def latent_kinds(rel: Tensor, thresholds: DiffThresholds) -> list[str]:
    """``"a_only"``, ``"b_only"``, ``"shared"`` or ``"between"`` for every latent."""
    kinds = []
    for value in rel.tolist():
        if value <= thresholds.specific:
            kinds.append("a_only")
        elif value >= 1 - thresholds.specific:
            kinds.append("b_only")
        elif abs(value - 0.5) <= thresholds.shared:
            kinds.append("shared")
        else:
            kinds.append("between")
    return kinds


class LatentScalingStats:
    """Streaming sums for the closed-form β of a set of latents (see the module docstring)."""

    def __init__(self, latents: Tensor, n_sources: int, width: int,
                 device: torch.device) -> None:
        m = int(latents.numel())
        self.latents = latents.to(device)
        self.error_dot = torch.zeros(n_sources, m, width, dtype=torch.float64, device=device)
        self.recon_dot = torch.zeros_like(self.error_dot)
        self.code_sq = torch.zeros(m, dtype=torch.float64, device=device)
        self.firings = torch.zeros(m, dtype=torch.int64, device=device)

    def update(self, x: Tensor, recon: Tensor, codes: Tensor) -> None:
        """Scaled sources and reconstructions ``(N, S, width)``, codes ``(N, n_latents)``."""
        f = codes.index_select(-1, self.latents).double()
        self.error_dot += torch.einsum("nm,nsd->smd", f, (x - recon).double())
        self.recon_dot += torch.einsum("nm,nsd->smd", f, recon.double())
        self.code_sq += f.pow(2).sum(0)
        self.firings += (f != 0).sum(0)

    def betas(self, directions: Tensor, own: Tensor) -> tuple[Tensor, Tensor]:
        """(β^ε, β^r), each ``(m, S)``, for directions ``(m, width)`` and the latents' own
        decoders ``(m, S, width)``; NaN for latents that never fired."""
        v = directions.double()
        denominator = (self.code_sq * v.pow(2).sum(-1)).unsqueeze(-1)
        own_part = self.code_sq.unsqueeze(-1) * torch.einsum("md,msd->ms", v, own.double())
        error = torch.einsum("md,smd->ms", v, self.error_dot) + own_part
        recon = torch.einsum("md,smd->ms", v, self.recon_dot)
        nan = torch.full_like(error, torch.nan)
        valid = denominator > 0
        return (torch.where(valid, error / denominator.clamp_min(1e-300), nan),
                torch.where(valid, recon / denominator.clamp_min(1e-300), nan))


@dataclass
class LatentDiff:
    """Per-latent diffing scores of a two-source crosscoder."""

    sources: list[str]
    norms: Tensor
    """``(n, 2)`` decoder norms per source (normalised space)."""
    relative_norm: Tensor
    """``(n,)`` Δ: 0 = only the first source, 1 = only the second."""
    kinds: list[str]
    density: Tensor
    """``(n,)`` fraction of the scored tokens on which each latent fires."""
    scaled: Tensor
    """``(m,)`` the specific latents that got Latent Scaling."""
    beta_error: Tensor
    """``(m, 2)`` β^ε per source."""
    beta_reconstruction: Tensor
    """``(m, 2)`` β^r per source."""
    firings: Tensor
    """``(m,)`` how often each scaled latent fired."""
    cosine: Tensor
    """``(n,)`` cosine between each latent's decoder directions in A and in B."""
    fired: Tensor
    """``(n,)`` how often each latent fired on the scored tokens."""
    thresholds: DiffThresholds = field(default_factory=DiffThresholds)

    @property
    def changed(self) -> list[int]:
        """Latents both models write whose directions differ, lowest cosine first."""
        t = self.thresholds
        found = [j for j, kind in enumerate(self.kinds) if kind in ("shared", "between")
                 and int(self.fired[j]) >= t.min_firings
                 and float(self.cosine[j]) < t.changed_cosine]
        return sorted(found, key=lambda j: float(self.cosine[j]))

    def changed_records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per changed latent, lowest cosine first."""
        return [{"latent": j, "kind": self.kinds[j], "changed": True,
                 "decoder_cosine": float(self.cosine[j]),
                 "relative_norm": float(self.relative_norm[j]),
                 "norms": [float(v) for v in self.norms[j]], "density": float(self.density[j]),
                 "firings": int(self.fired[j])} for j in self.changed]

    def ratios(self) -> tuple[Tensor, Tensor]:
        """(ν^ε, ν^r) of the scaled latents: the other model's β over the own model's β."""
        own = torch.tensor([1 if self.kinds[j] == "b_only" else 0 for j in self.scaled.tolist()],
                           dtype=torch.long)
        rows = torch.arange(len(own))
        nu = [b[rows, 1 - own] / b[rows, own] for b in (self.beta_error,
                                                        self.beta_reconstruction)]
        return nu[0], nu[1]

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per specific latent, most specific and densest first."""
        nu_error, nu_recon = self.ratios()
        out = []
        for i, j in enumerate(self.scaled.tolist()):
            enough = int(self.firings[i]) >= self.thresholds.min_firings
            ratios = (float(nu_error[i]), float(nu_recon[i]))
            apparent = enough and any(r >= self.thresholds.present_ratio for r in ratios)
            out.append({"latent": j, "kind": self.kinds[j], "changed": False,
                        "model": self.sources[1 if self.kinds[j] == "b_only" else 0],
                        "relative_norm": float(self.relative_norm[j]),
                        "decoder_cosine": float(self.cosine[j]),
                        "norms": [float(v) for v in self.norms[j]],
                        "density": float(self.density[j]), "firings": int(self.firings[i]),
                        "beta_error": [float(v) for v in self.beta_error[i]],
                        "beta_reconstruction": [float(v) for v in self.beta_reconstruction[i]],
                        "nu_error": ratios[0], "nu_reconstruction": ratios[1],
                        "scaling_reliable": enough, "only_apparently_specific": apparent})
        out.sort(key=lambda r: (-abs(r["relative_norm"] - 0.5), -r["density"]))
        return out

    def counts(self) -> dict[str, int]:
        counts = {kind: self.kinds.count(kind) for kind in ("a_only", "b_only", "shared",
                                                            "between")}
        return {**counts, "changed": len(self.changed)}


@torch.no_grad()
def diff_latents(crosscoder: Crosscoder, batches: Iterable[ActivationBatch], key: str,
                 thresholds: DiffThresholds | None = None,
                 max_tokens: int | None = None) -> LatentDiff:
    """Relative norms, kinds, densities and Latent Scaling of the specific latents, from one
    pass over `batches` (stacked sources under `key`, see `sparselens.data.paired`)."""
    thresholds = thresholds or DiffThresholds()
    if crosscoder.n_sources != 2:
        raise ValueError(f"model diffing needs a crosscoder over two sources, this one has "
                         f"{crosscoder.n_sources} ({', '.join(crosscoder.cfg.sources)})")
    norms = crosscoder.decoder_norms().detach().float().cpu()
    rel = relative_norm(norms)
    kinds = latent_kinds(rel, thresholds)
    specific = torch.tensor([j for j, k in enumerate(kinds) if k in ("a_only", "b_only")],
                            dtype=torch.long)
    device = crosscoder.W_dec.device
    stats = LatentScalingStats(specific, 2, crosscoder.cfg.d_source, device)
    fires = torch.zeros(crosscoder.cfg.n_latents, dtype=torch.int64, device=device)
    n_tokens = 0
    with crosscoder.evaluating():
        for x in stacked_inputs(batches, key, crosscoder, max_tokens):
            codes = crosscoder.encode(x)
            recon = crosscoder.as_sources(crosscoder.decode_scaled(codes))
            stats.update(crosscoder.model_space(x), recon, codes)
            fires += (codes != 0).sum(0)
            n_tokens += x.shape[0]
    if n_tokens == 0:
        raise ValueError("no tokens to score the latents on: the batches were empty")
    every_decoder = crosscoder.decoder_by_source().detach()
    decoders = every_decoder[specific.to(device)]
    own = torch.tensor([1 if kinds[j] == "b_only" else 0 for j in specific.tolist()],
                       dtype=torch.long, device=device)
    directions = decoders[torch.arange(len(own), device=device), own]
    beta_error, beta_recon = stats.betas(directions, decoders)
    return LatentDiff(sources=crosscoder.cfg.sources, norms=norms, relative_norm=rel,
                      kinds=kinds, density=(fires.double() / n_tokens).cpu(), scaled=specific,
                      beta_error=beta_error.cpu(), beta_reconstruction=beta_recon.cpu(),
                      firings=stats.firings.cpu(), cosine=decoder_cosine(every_decoder).cpu(),
                      fired=fires.cpu(), thresholds=thresholds)

