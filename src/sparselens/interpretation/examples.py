"""The example store: for every feature, where it fires hardest and a fair sample of where it
fires at all, collected in one streaming pass.

What a person needs to read a feature is its top-activating contexts plus a sample across its
activation range (the low and middle quantiles often tell a different story than the top).
Both are kept as fixed-size per-feature slot tables, so memory is ``n_features x slots`` no
matter how many tokens stream past, and both are updated the same way: every firing gets a
score, and each feature keeps its highest-scoring firings.

- Top examples: the score is the activation.
- Quantile samples: the score is a hash of (sequence, position, feature). Keeping the largest
  hashes is a bottom-k sketch, i.e. a uniform sample without replacement of all firings; sorting
  that sample by activation and cutting it into equal-count bins gives samples per activation
  quantile. Because the hash depends only on the firing itself, the sample does not depend on
  batch size, shuffling order or how the data was split across workers.

- Random non-activating contexts: a bottom-k sketch over tokens (hash of sequence and
  position) keeps a uniform pool of tokens together with the latents firing on them; each
  latent takes a hash-chosen run of pool tokens on which it does not fire.
- Activation histograms: fixed log-spaced bins of |activation|, so histograms from any number
  of batches or workers add up exactly.
- A train/test split of the examples, decided by the sequence id alone (the same splitmix64
  rule as the cache's held-out split, with its own seed) before any example is seen: an
  explainer reads train examples, scorers read test examples, and no test context shares a
  sequence with a train context. The rule is recorded in ``examples.json``.

Top examples rank by signed activation; for variants with negative codes (abstopk) the
negative firings still count towards density and appear among the samples.

Work per batch is vectorised over the non-zero codes (a sort of ``batch x L0`` entries and a
``topk`` over ``n_features x 2 slots``); there is no Python loop over tokens or features.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sparselens.data.batch import ActivationBatch
from sparselens.data.sites import Sites
from sparselens.data.split import RULE as SPLIT_RULE
from sparselens.data.split import heldout_mask
from sparselens.dictionaries.base import Dictionary
from sparselens.io.atomic import atomic_write_bytes, atomic_write_json, sha256_file

_MASK32 = 0xFFFFFFFF
EXAMPLES_FILE = "examples.safetensors"
EXAMPLES_META = "examples.json"
SETS = ("top", "samples", "random")
HISTOGRAM_EDGES = torch.logspace(-3, 3, 49, dtype=torch.float64)
"""Edges of the per-latent |activation| histogram: 48 log-spaced bins from 1e-3 to 1e3, plus
an underflow column (below 1e-3) and an overflow column (at least 1e3)."""


@dataclass(frozen=True)
class ExampleSplit:
    """Which examples are for training an explainer and which for scoring it: by sequence id.

    A pure function of the sequence id (see `sparselens.data.split`), fixed before collection;
    whole sequences fall on one side, so a test context never overlaps a train context.
    """

    test_fraction: float = 0.5
    seed: int = 1

    def is_test(self, seq_ids: Tensor) -> Tensor:
        return heldout_mask(seq_ids.clamp_min(0), self.test_fraction, self.seed) & (seq_ids >= 0)

    def to_json(self) -> dict[str, Any]:
        return {"unit": "sequence", "test_fraction": self.test_fraction, "seed": self.seed,
                "rule": SPLIT_RULE.replace("held out", "test")}


@dataclass
class ExampleSet:
    """A fixed number of example slots per feature; slot tensors are ``(n_features, slots)``."""

    seq_ids: Tensor
    """int64 sequence id of each example; -1 marks an empty slot."""
    positions: Tensor
    """int64 position of the example token in its sequence."""
    activations: Tensor
    """float32 activation of the feature on that token."""
    windows: Tensor | None = None
    """float32 ``(n_features, slots, before + 1 + after)``: the same feature's activation on the
    tokens around the example (see `collect_windows`); None until that pass has run."""

    @property
    def valid(self) -> Tensor:
        return self.seq_ids >= 0


@dataclass
class FeatureExamples:
    """Everything the report and explainers need to know about where each feature fires."""

    hookpoint: str
    n_tokens: int
    """Tokens seen; densities are firing counts divided by this."""
    counts: Tensor
    """int64 ``(n_features,)``: tokens on which each feature was non-zero."""
    activation_sums: Tensor
    """float64 ``(n_features,)``: sum of each feature's non-zero activations."""
    top: ExampleSet
    """The highest activations, sorted descending."""
    samples: ExampleSet
    """A uniform sample of firings, sorted ascending by activation (empty slots last)."""
    window: tuple[int, int] | None = None
    """(tokens before, tokens after) covered by the example windows, once collected."""
    random: ExampleSet | None = None
    """Per feature, uniformly drawn tokens on which it did not fire (activation 0)."""
    histogram: Tensor | None = None
    """int64 ``(n_features, 50)``: counts of |activation| in `HISTOGRAM_EDGES` bins."""
    split: ExampleSplit = field(default_factory=ExampleSplit)
    """The train/test rule of the examples."""
    tokens: Tensor | None = None
    """Optional ``(n_sequences, context_len)`` token table the examples index into, so the
    store alone can render contexts."""

    def sets(self) -> dict[str, ExampleSet]:
        """The example sets present, by name ("top", "samples", "random")."""
        found = {name: getattr(self, name) for name in SETS}
        return {name: value for name, value in found.items() if value is not None}

    @property
    def n_features(self) -> int:
        return int(self.counts.shape[0])

    @property
    def density(self) -> Tensor:
        """Fraction of tokens on which each feature fires."""
        return self.counts.double() / max(1, self.n_tokens)

    @property
    def mean_activation(self) -> Tensor:
        """Mean of each feature's non-zero activations (0 for features that never fired)."""
        return self.activation_sums / self.counts.clamp_min(1).double()

    @property
    def max_activation(self) -> Tensor:
        top = self.top.activations[:, 0]
        return torch.where(self.top.valid[:, 0], top, torch.zeros_like(top))

    def quantile_bins(self, n_bins: int) -> Tensor:
        """int64 ``(n_features, sample_slots)``: the activation-quantile bin (0 = lowest) of
        each sample, by equal-count split of that feature's sample; -1 for empty slots."""
        if n_bins < 1:
            raise ValueError(f"n_bins must be at least 1, got {n_bins}")
        valid = self.samples.valid
        n_valid = valid.sum(1, keepdim=True).clamp_min(1)
        slot = torch.arange(valid.shape[1]).unsqueeze(0)
        bins = torch.div(slot * n_bins, n_valid, rounding_mode="floor")
        return torch.where(valid, bins, torch.full_like(bins, -1))

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``examples.safetensors`` and its description ``examples.json`` into folder
        `path` (each atomically; the JSON last, with the tensors' sha256)."""
        from safetensors.torch import save

        path = Path(path)
        tensors = {"counts": self.counts, "activation_sums": self.activation_sums}
        for name, part in self.sets().items():
            tensors |= {f"{name}.seq_ids": part.seq_ids, f"{name}.positions": part.positions,
                        f"{name}.activations": part.activations}
            if part.windows is not None:
                tensors[f"{name}.windows"] = part.windows
        if self.histogram is not None:
            tensors["histogram"] = self.histogram
        if self.tokens is not None:
            tensors["tokens"] = self.tokens
        meta = {"hookpoint": self.hookpoint, "n_tokens": str(self.n_tokens),
                "window": json.dumps(self.window), "split": json.dumps(self.split.to_json())}
        contiguous = {k: v.contiguous().cpu() for k, v in tensors.items()}
        atomic_write_bytes(path / EXAMPLES_FILE, save(contiguous, metadata=meta))
        atomic_write_json(path / EXAMPLES_META, self._description(path / EXAMPLES_FILE))
        return path / EXAMPLES_FILE

    def _description(self, tensor_file: Path) -> dict[str, Any]:
        return {"hookpoint": self.hookpoint, "n_tokens": self.n_tokens,
                "n_features": self.n_features, "window": self.window,
                "slots": {name: int(part.seq_ids.shape[1]) for name, part in self.sets().items()},
                "split": self.split.to_json(),
                "histogram_edges": HISTOGRAM_EDGES.tolist() if self.histogram is not None
                else None,
                "dead_features": int((self.counts == 0).sum()),
                "tensors": {"file": EXAMPLES_FILE, "sha256": sha256_file(tensor_file)}}

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureExamples:
        from safetensors import SafetensorError, safe_open

        file = Path(path) / EXAMPLES_FILE
        if not file.exists():
            raise FileNotFoundError(f"{file} does not exist; collect examples first "
                                    "(collect_examples(...).save(folder))")
        try:
            with safe_open(str(file), framework="pt") as handle:
                meta = handle.metadata()
                t = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
            parts = {name: ExampleSet(t[f"{name}.seq_ids"], t[f"{name}.positions"],
                                      t[f"{name}.activations"], t.get(f"{name}.windows"))
                     for name in SETS if f"{name}.seq_ids" in t}
            window = json.loads(meta["window"])
            split = json.loads(meta.get("split", "null")) or {}
            return cls(hookpoint=meta["hookpoint"], n_tokens=int(meta["n_tokens"]),
                       counts=t["counts"], activation_sums=t["activation_sums"],
                       window=tuple(window) if window else None, histogram=t.get("histogram"),
                       tokens=t.get("tokens"),
                       split=ExampleSplit(float(split.get("test_fraction", 0.5)),
                                          int(split.get("seed", 1))), **parts)
        except (KeyError, ValueError, OSError, SafetensorError) as err:
            raise ValueError(f"{file} is not a valid example store ({err}); delete it and "
                             "collect the examples again") from None


class _SlotTable:
    """Per feature, the `slots` entries with the highest score offered so far."""

    def __init__(self, n_features: int, slots: int, score_dtype: torch.dtype,
                 device: torch.device) -> None:
        self.slots = slots
        self.empty_score = (float("-inf") if score_dtype.is_floating_point
                            else torch.iinfo(score_dtype).min)
        shape = (n_features, slots)
        self.score = torch.full(shape, self.empty_score, dtype=score_dtype, device=device)
        self.seq = torch.full(shape, -1, dtype=torch.long, device=device)
        self.pos = torch.full(shape, -1, dtype=torch.long, device=device)
        self.act = torch.zeros(shape, dtype=torch.float32, device=device)

    def offer(self, feats: Tensor, score: Tensor, seq: Tensor, pos: Tensor, act: Tensor) -> None:
        """Merge a batch of firings: keep each feature's best `slots` of old and new."""
        if self.slots == 0 or feats.numel() == 0:
            return
        keep, rank = top_per_group(feats, score, self.slots, self.score.shape[0])
        new = [torch.full_like(self.score, self.empty_score), torch.full_like(self.seq, -1),
               torch.full_like(self.pos, -1), torch.zeros_like(self.act)]
        f = feats[keep]
        for table, values in zip(new, (score, seq, pos, act)):
            table[f, rank] = values[keep]
        merged = [torch.cat([old, cand], dim=1)
                  for old, cand in zip((self.score, self.seq, self.pos, self.act), new)]
        best = merged[0].topk(self.slots, dim=1).indices
        self.score, self.seq, self.pos, self.act = (m.gather(1, best) for m in merged)

    def as_example_set(self, ascending: bool = False) -> ExampleSet:
        """Slots sorted by activation (descending, or ascending with empty slots last)."""
        valid = self.seq >= 0
        fill = float("inf") if ascending else float("-inf")
        order = torch.where(valid, self.act, torch.full_like(self.act, fill)).argsort(
            dim=1, descending=not ascending, stable=True)
        return ExampleSet(self.seq.gather(1, order).cpu(), self.pos.gather(1, order).cpu(),
                          self.act.gather(1, order).cpu())


def top_per_group(groups: Tensor, scores: Tensor, k: int, n_groups: int) -> tuple[Tensor, Tensor]:
    """Indices of the (up to) `k` highest-scoring entries of every group, and their rank in it.

    A segmented top-k by two stable sorts: by score, then by group, so each group's entries
    are contiguous and ordered; an entry's rank is its distance from its group's start.
    """
    order = scores.argsort(descending=True, stable=True)
    order = order[groups[order].argsort(stable=True)]
    sorted_groups = groups[order]
    sizes = torch.bincount(sorted_groups, minlength=n_groups)
    starts = sizes.cumsum(0) - sizes
    rank = torch.arange(order.numel(), device=order.device) - starts[sorted_groups]
    keep = rank < k
    return order[keep], rank[keep]


def firing_hash(seq: Tensor, pos: Tensor, feat: Tensor, seed: int) -> Tensor:
    """A 32-bit pseudo-random score per (sequence, position, feature), in int64.

    Each product stays below 2**63 (32-bit operand times a constant below 2**31), so the
    arithmetic is exact in int64 and identical on every platform.
    """
    h = ((seq & _MASK32) * 0x2545F491 & _MASK32) ^ ((pos & _MASK32) * 0x6B43A9B5 & _MASK32)
    h = h ^ ((feat & _MASK32) * 0x1B873593 & _MASK32) ^ (seed & _MASK32)
    for multiplier in (0x7FEB352D, 0x4F6CDD1D):
        h = h ^ (h >> 16)
        h = (h * multiplier) & _MASK32
    return h ^ (h >> 15)


class _TokenPool:
    """A uniform sample of `size` tokens (bottom-k sketch on a hash of sequence and position)
    together with the features firing on each (as pairs of token key and feature)."""

    def __init__(self, size: int, n_features: int, seed: int, device: torch.device) -> None:
        self.size, self.n_features, self.seed = size, n_features, seed
        empty = torch.empty(0, dtype=torch.long, device=device)
        self.score, self.keys, self.firing_keys, self.firing_feats = empty, empty, empty, empty

    def offer(self, seq: Tensor, pos: Tensor, rows: Tensor, feats: Tensor) -> None:
        """Tokens (seq, pos) of a batch; (rows, feats) are its non-zero codes."""
        if self.size == 0:
            return
        keys = token_key(seq, pos)
        score = firing_hash(seq, pos, torch.full_like(seq, -1), self.seed)
        if self.score.numel() >= self.size:  # only tokens beating the current k-th can enter
            fresh = score > self.score.min()
            keys, score = keys[fresh], score[fresh]
        if keys.numel() == 0:
            return
        all_score = torch.cat([self.score, score])
        best = all_score.topk(min(self.size, all_score.numel())).indices
        self.score, self.keys = all_score[best], torch.cat([self.keys, keys])[best]
        row_keys = token_key(seq[rows], pos[rows])
        firing_keys = torch.cat([self.firing_keys, row_keys])
        firing_feats = torch.cat([self.firing_feats, feats])
        kept = torch.isin(firing_keys, self.keys)
        self.firing_keys, self.firing_feats = firing_keys[kept], firing_feats[kept]

    def non_firing(self, n: int) -> ExampleSet:
        """Per feature, `n` pool tokens on which it is zero, read from a hash-chosen start in
        the pool (slots stay empty where fewer exist)."""
        n_features, m = self.n_features, self.keys.numel()
        seq = torch.full((n_features, n), -1, dtype=torch.long)
        pos = torch.full_like(seq, -1)
        if m == 0 or n == 0:
            return ExampleSet(seq, pos, torch.zeros(n_features, n))
        keys = self.keys[self.score.argsort(descending=True)].cpu()
        by_key = keys.argsort()
        slot_of = by_key[torch.searchsorted(keys[by_key], self.firing_keys.cpu())]
        firing = (slot_of * n_features + self.firing_feats.cpu()).sort().values
        feats = torch.arange(n_features)
        start = firing_hash(feats, feats, feats, self.seed) % m
        cand = (start[:, None] + torch.arange(min(m, 4 * n + 16))[None, :]) % m
        probe = cand * n_features + feats[:, None]
        at = torch.searchsorted(firing, probe).clamp_max(max(0, firing.numel() - 1))
        ok = firing[at] != probe if firing.numel() else torch.ones_like(probe, dtype=torch.bool)
        rank = ok.long().cumsum(1) - 1
        rows, cols = (ok & (rank < n)).nonzero(as_tuple=True)
        chosen = keys[cand[rows, cols]]
        seq[rows, rank[rows, cols]] = chosen >> 32
        pos[rows, rank[rows, cols]] = chosen & _MASK32
        return ExampleSet(seq, pos, torch.zeros(n_features, n))


def token_key(seq: Tensor, pos: Tensor) -> Tensor:
    """One int64 per token: ``seq * 2**32 + pos``."""
    return (seq.long() << 32) | (pos.long() & _MASK32)


class ExampleCollector:
    """Streaming accumulator behind `collect_examples`; feed it codes batch by batch."""

    def __init__(self, n_features: int, n_top: int = 20, n_quantile_samples: int = 40,
                 seed: int = 0, device: str | torch.device = "cpu", n_random: int = 20,
                 pool_size: int = 4096, split: ExampleSplit | None = None) -> None:
        if n_top < 1:
            raise ValueError(f"n_top must be at least 1, got {n_top}")
        if n_quantile_samples < 0 or n_random < 0 or pool_size < 0:
            raise ValueError("n_quantile_samples, n_random and pool_size must be >= 0, got "
                             f"{n_quantile_samples}, {n_random} and {pool_size}")
        if n_features >= 1 << 30:
            raise ValueError(f"{n_features} features is more than the store's keys can hold")
        device = torch.device(device)
        self.seed = seed
        self.n_random = n_random
        self.split = split or ExampleSplit()
        self.n_tokens = 0
        self.counts = torch.zeros(n_features, dtype=torch.long, device=device)
        self.sums = torch.zeros(n_features, dtype=torch.float64, device=device)
        self.top = _SlotTable(n_features, n_top, torch.float32, device)
        self.samples = _SlotTable(n_features, n_quantile_samples, torch.long, device)
        self.pool = _TokenPool(pool_size if n_random else 0, n_features, seed, device)
        self.edges = HISTOGRAM_EDGES.to(device)
        self.histogram = torch.zeros(n_features * (len(self.edges) + 1), dtype=torch.long,
                                     device=device)

    def update(self, codes: Tensor, seq_ids: Tensor, positions: Tensor) -> None:
        """Add a batch of dense codes ``(B, n_features)`` for tokens at (seq_ids, positions)."""
        rows, feats = codes.nonzero(as_tuple=True)
        acts = codes[rows, feats].float()
        seq_all, pos_all = seq_ids.to(codes.device).long(), positions.to(codes.device).long()
        seq, pos = seq_all[rows], pos_all[rows]
        self.n_tokens += int(codes.shape[0])
        self.counts += torch.bincount(feats, minlength=self.counts.shape[0])
        self.sums.index_add_(0, feats, acts.double())
        bins = torch.bucketize(acts.abs().double(), self.edges, right=True)
        self.histogram.index_add_(0, feats * (len(self.edges) + 1) + bins,
                                  torch.ones_like(feats))
        self.top.offer(feats, acts, seq, pos, acts)
        self.samples.offer(feats, firing_hash(seq, pos, feats, self.seed), seq, pos, acts)
        self.pool.offer(seq_all, pos_all, rows, feats)

    def result(self, hookpoint: str) -> FeatureExamples:
        return FeatureExamples(hookpoint=hookpoint, n_tokens=self.n_tokens,
                               counts=self.counts.cpu(), activation_sums=self.sums.cpu(),
                               top=self.top.as_example_set(),
                               samples=self.samples.as_example_set(ascending=True),
                               random=self.pool.non_firing(self.n_random),
                               histogram=self.histogram.view(self.counts.shape[0], -1).cpu(),
                               split=self.split)


def batch_input(batch: ActivationBatch, hookpoint: str, dictionary: Dictionary) -> Tensor:
    """The `Sites` accessor for one hookpoint, kept under its old name for callers of it."""
    return Sites(hookpoint).inputs_for(dictionary, batch)


@torch.no_grad()
def collect_examples(dictionary: Dictionary, batches: Iterable[ActivationBatch], hookpoint: str,
                     n_top: int = 20, n_quantile_samples: int = 40,
                     seed: int = 0, n_random: int = 20, pool_size: int = 4096,
                     split: ExampleSplit | None = None) -> FeatureExamples:
    """One pass over `batches`: top-`n_top` examples, a uniform sample of
    `n_quantile_samples` firings, `n_random` non-firing tokens (from a uniform pool of
    `pool_size` tokens), firing counts, activation sums and histograms for every feature.

    Codes come from ``dictionary.encode`` in eval mode, so this works for every variant.
    """
    collector = ExampleCollector(dictionary.cfg.n_latents, n_top, n_quantile_samples, seed,
                                 device=next(dictionary.parameters()).device,
                                 n_random=n_random, pool_size=pool_size, split=split)
    with dictionary.evaluating():
        sites = Sites(hookpoint)
        for index, batch in enumerate(batches):
            codes = dictionary.encode(sites.inputs_for(dictionary, batch, index))
            collector.update(codes, batch.seq_ids, batch.positions)
    if collector.n_tokens == 0:
        raise ValueError("no activations to collect examples from: the batches were empty "
                         "(is the cache split empty?)")
    return collector.result(hookpoint)
