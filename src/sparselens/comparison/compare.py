"""The `compare` pipeline: everything sparselens can say about two dictionaries, in one record.

- decoder cosine matching and PW-MCC, when both decoders write into spaces of one width;
- feature splitting, when the widths (numbers of latents) differ;
- with shared tokens (an activation cache holding both dictionaries' hookpoints: one model at
  two hookpoints, or two models harvested together with ``sparselens harvest --second-model``):
  activation-correlation matching, SVCCA/CKA of the paired feature spaces against random
  pairings (Lan et al.), and each dictionary's top contexts;
- the latents of each dictionary that the other lacks (novel), with their contexts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sparselens.comparison.correlation import match_activations
from sparselens.comparison.lan_filter import PairFilter, filter_pairs, token_profile
from sparselens.comparison.splitting import SplitFit, feature_splits
from sparselens.comparison.universality import SpaceSimilarity, paired_space_similarity
from sparselens.dictionaries.base import Dictionary
from sparselens.evaluation.matching import Matching, cosine_block, cosine_pairs, match_decoders
from sparselens.interpretation.examples import ExampleCollector, FeatureExamples


@dataclass
class CompareOptions:
    """How matching, splitting and novelty are decided."""

    k: int = 16
    """Candidate partners per latent for the sparse matching solver (large dictionaries)."""
    exact_limit: int = 4096 * 4096
    """Largest n_a * n_b matched exactly with a dense matrix (above: sparse solver)."""
    novel_threshold: float = 0.5
    """A latent is novel when no latent of the other dictionary reaches this decoder cosine
    (and, with shared tokens, this activation correlation)."""
    min_correlation: float = 0.3
    """Activation-matched pairs below this correlation are left out of SVCCA/CKA."""
    n_permutations: int = 100
    """Random pairings for the SVCCA/CKA baseline."""
    split_min_cosine: float = 0.8
    """A split parent must be reconstructed at least this well by its children."""
    split_min_gain: float = 0.05
    """... and that much better than by its single best child."""
    max_children: int = 4
    """Largest number of children fitted per split parent."""
    n_tokens: int = 100_000
    """Shared tokens read from the cache for activation statistics."""
    n_listed: int = 30
    """Novel latents and splits listed per dictionary on the page (all are in the JSON)."""
    lan_max_token_share: float | None = None
    """Lan et al.'s concept filter before SVCCA/CKA: drop a pair when either latent has more
    than this share of its top activations on one token, or on non-semantic tokens
    (whitespace, punctuation, specials); None: off. Needs the shared tokens' ids."""
    lan_top: int = 20
    """Top activations per latent that the concept filter reads."""

    def __post_init__(self) -> None:
        if self.k < 1 or self.n_tokens < 2 or self.n_permutations < 0 or self.n_listed < 0:
            raise ValueError("k must be >= 1, n_tokens >= 2, n_permutations and n_listed >= 0")
        if self.lan_max_token_share is not None and not 0 < self.lan_max_token_share <= 1:
            raise ValueError("lan_max_token_share is a share of top activations, in (0, 1]")
        if self.lan_top < 1:
            raise ValueError("lan_top must be at least 1")


@dataclass
class SharedTokens:
    """Both dictionaries' sparse codes (scipy CSR) on the same cache rows, and examples."""

    codes_a: Any
    codes_b: Any
    examples_a: FeatureExamples
    examples_b: FeatureExamples
    split: str
    token_ids: tuple[Any, Any] | None = None
    """Per side, ``(N,)`` token id of each shared row (aligned models: each model's token
    ending there); None when unknown."""
    semantic: tuple[Any, Any] | None = None
    """Per side, ``(N,)`` bool: does that token's text carry meaning (`lan_filter`)."""


@dataclass
class Comparison:
    names: tuple[str, str]
    n_latents: tuple[int, int]
    decoder: Matching | None
    decoder_note: str | None
    activation: Matching | None
    universality: SpaceSimilarity | None
    splits: list[SplitFit]
    novel: dict[str, list[int]]
    shared: SharedTokens | None = field(default=None, repr=False)
    pair_filter: PairFilter | None = None

    def record(self) -> dict[str, Any]:
        return {"schema": "sparselens.compare", "schema_version": 1,
                "dictionaries": {"A": self.names[0], "B": self.names[1]},
                "n_latents": {"A": self.n_latents[0], "B": self.n_latents[1]},
                "decoder_matching": self.decoder.summary() if self.decoder else None,
                "decoder_note": self.decoder_note,
                "activation_matching": self.activation.summary() if self.activation else None,
                "shared_tokens": self.shared.codes_a.shape[0] if self.shared else 0,
                "shared_split": self.shared.split if self.shared else None,
                "universality": self.universality.summary() if self.universality else None,
                "pair_filter": self.pair_filter.to_dict() if self.pair_filter else None,
                "pairs": {key: _pairs(m) for key, m in (("decoder", self.decoder),
                                                        ("activation", self.activation))
                          if m is not None},
                "splits": [s.to_dict() for s in self.splits],
                "novel": self.novel}


def _pairs(matching: Matching) -> dict[str, list]:
    """The matched pairs, most similar first (the viewer lists them with links)."""
    order = np.argsort(-matching.similarity, kind="stable")
    return {"a": matching.rows[order].tolist(), "b": matching.cols[order].tolist(),
            "similarity": np.round(matching.similarity[order], 5).tolist()}


def shared_codes(a: Dictionary, b: Dictionary, cache: Any, hookpoint_a: str, hookpoint_b: str,
                 n_tokens: int, batch_size: int = 2048) -> SharedTokens:
    """Encode the same cache rows with both dictionaries (held-out rows when there are
    enough, else all) and collect each one's example store on the way."""
    from scipy.sparse import vstack

    from sparselens.comparison.correlation import codes_matrix
    from sparselens.interpretation.examples import batch_input

    names = [cache.resolve(hookpoint_a), cache.resolve(hookpoint_b)]
    split = "heldout" if cache.n_rows("heldout") >= min(n_tokens, 10_000) else "all"
    parts: dict[str, list] = {"a": [], "b": [], "tokens": []}
    collectors = {"a": ExampleCollector(a.cfg.n_latents), "b": ExampleCollector(b.cfg.n_latents)}
    seen = 0
    with torch.no_grad(), a.evaluating(), b.evaluating():
        for batch in cache.batches(batch_size, hookpoints=list(dict.fromkeys(names)),
                                   split=split, shuffle=False):
            take = min(len(batch), n_tokens - seen)
            for key, dictionary, name in (("a", a, names[0]), ("b", b, names[1])):
                codes = dictionary.encode(batch_input(batch, name, dictionary))[:take]
                collectors[key].update(codes, batch.seq_ids[:take], batch.positions[:take])
                parts[key].append(codes_matrix(codes))
            parts["tokens"].append(batch.token_ids[:take].numpy())
            seen += take
            if seen >= n_tokens:
                break
    hookpoint = {"a": names[0], "b": names[1]}
    ids = np.concatenate(parts["tokens"])
    return SharedTokens(vstack(parts["a"]).tocsr(), vstack(parts["b"]).tocsr(),
                        collectors["a"].result(hookpoint["a"]),
                        collectors["b"].result(hookpoint["b"]), split, (ids, ids))


def _novel(decoder: Matching | None, activation: Matching | None, shared: SharedTokens | None,
           threshold: float) -> dict[str, list[int]]:
    """Per side, latents whose best partner on every available measure is below threshold
    (latents that never fired on the shared tokens are not called novel: they are dead)."""
    measured = [m for m in (decoder, activation) if m is not None]
    out: dict[str, list[int]] = {"A": [], "B": []}
    if not measured:
        return out
    for side in out:
        bests = [np.asarray(m.best_a if side == "A" else m.best_b) for m in measured]
        novel = np.logical_and.reduce([best < threshold for best in bests])
        if shared is None:
            out[side] = np.flatnonzero(novel).tolist()
            continue
        counts = (shared.examples_a if side == "A" else shared.examples_b).counts.numpy()
        novel &= counts > 0
        order = np.argsort(-counts[novel], kind="stable")
        out[side] = np.flatnonzero(novel)[order].tolist()
    return out


def compare_dictionaries(a: Dictionary, b: Dictionary, names: tuple[str, str] = ("A", "B"),
                         cache: Any = None, hookpoints: tuple[str, str] | None = None,
                         options: CompareOptions | None = None,
                         shared: SharedTokens | None = None,
                         tokenizer: Any = None) -> Comparison:
    """Compare two dictionaries; `cache` (an ActivationCache) adds everything that needs
    shared tokens, read at `hookpoints` (default: each dictionary's recorded hookpoint).
    Instead of a cache, `shared` gives codes already computed on shared tokens (two models
    with different tokenizers: `alignment.aligned_shared_codes`). `tokenizer` (the cache's)
    tells semantic tokens for the Lan et al. filter."""
    options = options or CompareOptions()
    w_a, w_b = a.W_dec.detach().float().cpu(), b.W_dec.detach().float().cpu()
    decoder, note = None, None
    if w_a.shape[1] == w_b.shape[1]:
        decoder = match_decoders(w_a, w_b, k=options.k, exact_limit=options.exact_limit)
        if a.cfg.model and b.cfg.model and a.cfg.model != b.cfg.model:
            note = (f"the dictionaries come from different models ({a.cfg.model}, "
                    f"{b.cfg.model}): their decoder cosines compare unrelated bases; trust the "
                    "activation matching instead")
    else:
        note = (f"decoders write into spaces of width {w_a.shape[1]} and {w_b.shape[1]}: no "
                "decoder cosine; give --cache with both hookpoints for activation matching")
    splits: list[SplitFit] = []
    if decoder is not None and a.cfg.n_latents != b.cfg.n_latents:
        small, large = (w_a, w_b) if a.cfg.n_latents < b.cfg.n_latents else (w_b, w_a)
        splits = feature_splits(small, large, min_cosine=options.split_min_cosine,
                                min_gain=options.split_min_gain,
                                max_children=options.max_children)
    activation = universality = pair_filter = None
    if cache is not None and shared is not None:
        raise ValueError("give shared tokens either as a cache or as precomputed codes")
    if cache is not None:
        hp = hookpoints or (a.cfg.hookpoint, b.cfg.hookpoint)
        if hp[0] is None or hp[1] is None:
            raise ValueError("a dictionary does not record its hookpoint; name the cache "
                             "hookpoints to read (--hookpoint-a / --hookpoint-b)")
        shared = shared_codes(a, b, cache, hp[0], hp[1], options.n_tokens)
        if tokenizer is not None and shared.token_ids is not None:
            from sparselens.comparison.lan_filter import semantic_rows

            rows = semantic_rows(tokenizer, shared.token_ids[0])
            shared.semantic = (rows, rows)
    if shared is not None:
        tie_break = None if decoder is None else (cosine_pairs(w_a, w_b), cosine_block(w_a, w_b))
        activation = match_activations(shared.codes_a, shared.codes_b, k=options.k,
                                       exact_limit=options.exact_limit, tie_break=tie_break)
        keep, pair_filter = _lan_filter(activation, shared, options)
        if keep.sum() >= 3:
            universality = paired_space_similarity(w_a, w_b, activation.rows[keep],
                                                   activation.cols[keep],
                                                   n_permutations=options.n_permutations)
    novel = _novel(decoder, activation, shared, options.novel_threshold)
    return Comparison(names, (a.cfg.n_latents, b.cfg.n_latents), decoder, note, activation,
                      universality, splits, novel, shared, pair_filter)


def _lan_filter(activation: Matching, shared: SharedTokens, options: CompareOptions
                ) -> tuple[np.ndarray, PairFilter]:
    """Pairs kept for SVCCA/CKA: correlation at least the minimum and, with the concept
    filter on, neither latent a token detector or non-semantic (Lan et al.)."""
    keep_a = keep_b = None
    if options.lan_max_token_share is not None:
        if shared.token_ids is None or shared.semantic is None:
            raise ValueError("the Lan et al. concept filter needs the shared tokens' ids and a "
                             "tokenizer (give --tokenizer, or leave --options.lan-max-token-share "
                             "unset)")
        profiles = [token_profile(codes, ids, sem, options.lan_top).keep(
            options.lan_max_token_share) for codes, ids, sem in
            zip((shared.codes_a, shared.codes_b), shared.token_ids, shared.semantic)]
        keep_a, keep_b = profiles
    return filter_pairs(activation.rows, activation.cols, activation.similarity,
                        options.min_correlation, keep_a, keep_b)
