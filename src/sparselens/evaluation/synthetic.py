"""Synthetic ground truth: activations built from known sparse features, so recovery is exact.

Every other metric judges a dictionary against proxies; here the true features are known.
`SyntheticFeatures` draws ``n_features`` random unit directions in ``d_model`` dimensions
(``n_features > d_model``: superposition) and generates tokens as sparse non-negative
combinations of them, with three properties real features are believed to have:

- **power-law frequencies**: feature i fires with probability ∝ (i + 1)^-alpha, scaled so the
  expected number of active features per token is ``mean_active``;
- **correlation**: ``n_correlated_pairs`` pairs of features fire through a Gaussian copula
  with correlation ``correlation`` (each keeps its own marginal frequency);
- **hierarchy**: ``n_parents`` parent features each have ``children_per_parent`` children; a
  child fires only together with its parent (at most one child per token), like "starts
  with S" and the token "snake". This is the setting in which Chanin et al. ("A is for
  Absorption", 2024) show that sparsity rewards absorbing the parent into the child latent.

Scoring (`recovery_metrics`), with D the true directions and W the learned decoder rows:
mean max cosine (MMCS, Sharkey et al. 2022: for each true feature the best cosine with any
decoder row, signed, since codes are non-negative and a flipped direction is no recovery)
and the fraction of true features recovered above a cosine threshold (0.9). `hierarchy_absorption`
measures absorption against the known hierarchy: on tokens where a parent and one of its
children are both active, how often the parent's best-matching latent is silent, next to the
same miss rate on tokens where the parent is active alone (the latent's ordinary recall).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from sparselens.data.batch import ActivationBatch

HOOKPOINT = "synthetic"
"""The hookpoint name synthetic batches carry."""


@dataclass(frozen=True)
class SyntheticConfig:
    """The generative model of the synthetic activations."""

    d_model: int = 64
    """Width of the activations."""
    n_features: int = 256
    """Number of true features (more than d_model: superposition)."""
    mean_active: float = 4.0
    """Expected number of independent (non-child) features active per token."""
    alpha: float = 0.5
    """Power-law exponent of the firing probabilities (0: all equally frequent)."""
    n_correlated_pairs: int = 16
    """Pairs of features whose firing is correlated through a Gaussian copula."""
    correlation: float = 0.6
    """Copula correlation of each correlated pair."""
    n_parents: int = 4
    """Parent features of the hierarchy (taken from the most frequent features)."""
    children_per_parent: int = 2
    """Children per parent; a child fires only with its parent."""
    child_probability: float = 0.5
    """Probability that one of a parent's children fires when the parent does."""
    magnitude_std: float = 0.2
    """Active features have magnitude |N(1, magnitude_std)|."""
    seed: int = 0
    """Seed of the directions, frequencies and hierarchy."""

    def __post_init__(self) -> None:
        if self.d_model <= 0 or self.n_features <= 0:
            raise ValueError("d_model and n_features must be positive")
        hierarchy = self.n_parents * (1 + self.children_per_parent)
        if hierarchy + 2 * self.n_correlated_pairs > self.n_features:
            raise ValueError(f"the hierarchy ({hierarchy} features) and the correlated pairs "
                             f"({2 * self.n_correlated_pairs}) need more than n_features="
                             f"{self.n_features}")
        if not 0 < self.mean_active < self.n_features:
            raise ValueError(f"mean_active must be in (0, n_features), got {self.mean_active}")
        if not -1 < self.correlation < 1:
            raise ValueError(f"correlation must be in (-1, 1), got {self.correlation}")
        if not 0 <= self.child_probability <= 1:
            raise ValueError("child_probability is a probability, in [0, 1]")


class SyntheticFeatures:
    """The true features of a `SyntheticConfig` and a sampler of tokens built from them.

    Feature layout: the first ``n_parents`` features (the most frequent) are parents; the next
    ``n_parents * children_per_parent`` are their children (``children[p]`` lists them); then
    ``n_correlated_pairs`` pairs; the rest fire independently.
    """

    def __init__(self, cfg: SyntheticConfig) -> None:
        self.cfg = cfg
        gen = torch.Generator().manual_seed(cfg.seed)
        directions = torch.randn(cfg.n_features, cfg.d_model, generator=gen, dtype=torch.float64)
        self.directions = directions / directions.norm(dim=1, keepdim=True)
        n_children = cfg.n_parents * cfg.children_per_parent
        self.parents = torch.arange(cfg.n_parents)
        self.children = (torch.arange(n_children) + cfg.n_parents).view(
            cfg.n_parents, cfg.children_per_parent)
        start = cfg.n_parents + n_children
        pairs = torch.arange(start, start + 2 * cfg.n_correlated_pairs)
        self.pairs = pairs.view(-1, 2)
        # Independent features (parents, pair members and the rest) share the power law; the
        # children's marginal frequency follows from their parent's.
        independent = torch.ones(cfg.n_features, dtype=torch.bool)
        independent[self.children.flatten()] = False
        ranks = torch.arange(int(independent.sum()), dtype=torch.float64)
        weights = (ranks + 1).pow(-cfg.alpha)
        probs = torch.zeros(cfg.n_features, dtype=torch.float64)
        probs[independent] = (weights * cfg.mean_active / weights.sum()).clamp(max=1.0)
        self.probs = probs

    @property
    def expected_l0(self) -> float:
        """Expected number of active features per token, children included."""
        return float(self.probs.sum()) + self.cfg.child_probability * float(
            self.probs[self.parents].sum())

    def sample(self, n_tokens: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``(activations (n, d_model) float32, true coefficients (n, n_features) float32)``."""
        cfg = self.cfg
        normal = torch.randn(n_tokens, cfg.n_features, generator=generator, dtype=torch.float64)
        a, b = self.pairs[:, 0], self.pairs[:, 1]
        rho = cfg.correlation
        normal[:, b] = rho * normal[:, a] + math.sqrt(1 - rho * rho) * normal[:, b]
        threshold = torch.special.ndtri(self.probs.clamp(1e-12, 1 - 1e-12))
        active = normal < threshold
        active[:, self.probs == 0] = False
        self._add_children(active, generator)
        magnitude = (1 + cfg.magnitude_std * torch.randn(
            n_tokens, cfg.n_features, generator=generator, dtype=torch.float64)).abs()
        coefficients = active * magnitude
        return (coefficients @ self.directions).float(), coefficients.float()

    def _add_children(self, active: Tensor, generator: torch.Generator) -> None:
        """At most one child per active parent, with probability ``child_probability``."""
        cfg = self.cfg
        n = active.shape[0]
        pick = torch.randint(cfg.children_per_parent, (n, cfg.n_parents), generator=generator)
        fire = torch.rand(n, cfg.n_parents, generator=generator) < cfg.child_probability
        fire &= active[:, self.parents]
        child = self.children[torch.arange(cfg.n_parents).expand(n, -1), pick]
        rows = torch.arange(n).unsqueeze(1).expand_as(child)
        active[rows[fire], child[fire]] = True

    def batches(self, n_tokens_per_batch: int, *, seed: int = 0,
                skip: int = 0) -> Iterator[ActivationBatch]:
        """An endless deterministic stream of batches; batch i depends only on (seed, i), so
        ``skip`` resumes exactly (the trainer's `DataFactory` contract)."""
        index = skip
        while True:
            gen = torch.Generator().manual_seed(hash((self.cfg.seed, seed, index)) & 0x7FFFFFFF)
            x, _ = self.sample(n_tokens_per_batch, gen)
            zeros = torch.zeros(n_tokens_per_batch, dtype=torch.int64)
            yield ActivationBatch(acts={HOOKPOINT: x}, token_ids=zeros, seq_ids=zeros,
                                  positions=zeros)
            index += 1


def _unit_rows(matrix: Tensor) -> Tensor:
    matrix = matrix.detach().double().cpu()
    return matrix / matrix.norm(dim=1, keepdim=True).clamp_min(1e-12)


def cosine_matrix(true_directions: Tensor, decoder: Tensor) -> Tensor:
    """``(n_true, n_latents)`` cosines between true directions and decoder rows (float64)."""
    return _unit_rows(true_directions) @ _unit_rows(decoder).T


def recovery_metrics(true_directions: Tensor, decoder: Tensor,
                     threshold: float = 0.9) -> dict[str, float]:
    """Mean max cosine and the fraction of true features some latent matches above `threshold`.

    Signed cosine: dictionary codes are non-negative, so a latent pointing opposite to a true
    feature cannot represent it.
    """
    best = cosine_matrix(true_directions, decoder).max(dim=1).values
    return {"mean_max_cosine": float(best.mean()),
            "fraction_recovered": float((best > threshold).double().mean()),
            "recovery_threshold": threshold,
            "n_true_features": int(best.numel())}


def hierarchy_absorption(features: SyntheticFeatures, decoder: Tensor, codes: Tensor,
                         coefficients: Tensor) -> dict[str, object]:
    """Absorption of each parent by its children, scored against the known hierarchy.

    For parent p, its latent is the decoder row with the highest cosine to p's direction.
    ``miss_with_child`` = fraction of tokens with p and one of its children active on which
    that latent is zero; ``miss_alone`` = the same on tokens where p is active without a
    child. ``absorption`` = max(0, miss_with_child − miss_alone): misses explained by the
    child, not by a generally weak latent. Parents whose latent matches below 0.5 cosine are
    reported as not learned (absorption undefined for them, counted separately).
    """
    cos = cosine_matrix(features.directions, decoder)
    active_codes = codes != 0
    truth = coefficients != 0
    rows = []
    for p, kids in zip(features.parents.tolist(), features.children.tolist()):
        latent = int(cos[p].argmax())
        with_child = truth[:, p] & truth[:, kids].any(dim=1)
        alone = truth[:, p] & ~truth[:, kids].any(dim=1)
        if int(with_child.sum()) == 0 or int(alone.sum()) == 0:
            continue
        miss_child = float((~active_codes[with_child, latent]).double().mean())
        miss_alone = float((~active_codes[alone, latent]).double().mean())
        rows.append({"parent": p, "latent": latent, "cosine": float(cos[p, latent]),
                     "learned": float(cos[p, latent]) >= 0.5, "miss_with_child": miss_child,
                     "miss_alone": miss_alone,
                     "absorption": max(0.0, miss_child - miss_alone)})
    learned = [r for r in rows if r["learned"]]
    return {"per_parent": rows,
            "mean_absorption": (sum(r["absorption"] for r in learned) / len(learned)
                                if learned else None),
            "parents_learned": len(learned), "parents_scored": len(rows)}


def train_synthetic(features: SyntheticConfig | SyntheticFeatures, architecture: str,
                    settings: dict[str, object], *, n_latents: int, n_tokens: int,
                    batch_size: int = 1024, seed: int = 0):
    """Train `architecture` (registry name, config fields `settings`) on synthetic batches with
    the library's Trainer; returns the dictionary (nothing is written to disk)."""
    from sparselens.training.config import CheckpointConfig, LogConfig, TrainConfig
    from sparselens.training.trainer import Trainer

    if isinstance(features, SyntheticConfig):
        features = SyntheticFeatures(features)
    cfg = TrainConfig(architecture=architecture, n_latents=n_latents, dictionary=dict(settings),
                      hookpoint=HOOKPOINT, n_tokens=n_tokens, batch_size=batch_size,
                      init_tokens=min(16384, n_tokens), seed=seed,
                      checkpoint=CheckpointConfig(every_steps=0),
                      log=LogConfig(progress=False, every_steps=10**9))
    source = features

    def data(skip: int) -> Iterator[ActivationBatch]:
        return source.batches(batch_size, seed=seed, skip=skip)

    return Trainer(cfg, data).fit()


def score_synthetic(features: SyntheticFeatures, dictionary, *, n_tokens: int = 20_000,
                    seed: int = 12345, threshold: float = 0.9) -> dict[str, object]:
    """Recovery, absorption and L0 of `dictionary` on fresh held-out synthetic tokens."""
    gen = torch.Generator().manual_seed(seed)
    x, coefficients = features.sample(n_tokens, gen)
    device, dtype = dictionary.W_dec.device, dictionary.W_dec.dtype
    with torch.no_grad(), dictionary.evaluating():
        codes = dictionary.encode(x.to(device, dtype)).cpu()
        recon = dictionary(x.to(device, dtype)).cpu().double()
    fvu = float((x.double() - recon).pow(2).sum() / (x.double() - x.double().mean(0)).pow(2).sum())
    return {**recovery_metrics(features.directions, dictionary.W_dec, threshold),
            "absorption": hierarchy_absorption(features, dictionary.W_dec, codes, coefficients),
            "l0": float((codes != 0).sum(1).double().mean()), "fvu": fvu,
            "true_l0": float((coefficients != 0).sum(1).double().mean())}


SIZE_FIELDS = frozenset({"group_sizes", "k_aux", "compose"})
"""Variant fields tied to the real dictionary's width; the synthetic run uses their defaults."""


def synthetic_settings(architecture: str, cfg: object,
                       expected_l0: float) -> tuple[dict[str, object], dict[str, object]]:
    """The variant's own config fields of a trained dictionary, for a synthetic run.

    Widths, hookpoints and scales are the synthetic data's; fields tied to the width
    (`SIZE_FIELDS`) take their defaults; a ``k`` becomes the synthetic data's right k (the
    integer above its true mean L0), since the dictionary's k was chosen for another density.
    Returns ``(settings, notes)``; notes record what was replaced.
    """
    from sparselens.dictionaries import REGISTRY
    from sparselens.dictionaries.base import DictionaryConfig

    if architecture not in REGISTRY:
        raise ValueError(f"architecture {architecture!r} is not in the registry; synthetic "
                         "recovery trains it anew")
    common = {f.name for f in dataclasses.fields(DictionaryConfig)}
    values = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(vars(cfg))
    own = {f.name for f in dataclasses.fields(REGISTRY[architecture].config_class)}
    settings = {k: v for k, v in values.items()
                if k in own and k not in common and k not in SIZE_FIELDS}
    notes: dict[str, object] = {"dropped_size_fields": sorted(SIZE_FIELDS & set(values))}
    if "k" in settings:
        notes["dictionary_k"] = settings["k"]
        settings["k"] = math.ceil(expected_l0)
    return settings, notes


def recovery_of_architecture(architecture: str, dictionary_cfg: object, *, n_tokens: int,
                             n_latents: int = 512, batch_size: int = 2048,
                             cfg: SyntheticConfig | None = None,
                             seed: int = 0) -> dict[str, object]:
    """Train `architecture` with the variant settings of `dictionary_cfg` on synthetic data
    and score it (the bench's ``synthetic`` suite)."""
    d_in, d_out = getattr(dictionary_cfg, "d_in", None), getattr(dictionary_cfg, "d_out", None)
    if d_out is not None and d_out != d_in:
        raise ValueError("synthetic recovery is defined for autoencoders (d_out == d_in)")
    features = SyntheticFeatures(cfg or SyntheticConfig())
    settings, notes = synthetic_settings(architecture, dictionary_cfg, features.expected_l0)
    torch.manual_seed(seed)
    trained = train_synthetic(features, architecture, settings, n_latents=n_latents,
                              n_tokens=n_tokens, batch_size=batch_size, seed=seed)
    return {"architecture": architecture, "settings": settings, **notes,
            "n_latents": n_latents, "n_tokens": n_tokens,
            "expected_l0": features.expected_l0,
            "data": dataclasses.asdict(features.cfg), **score_synthetic(features, trained)}
