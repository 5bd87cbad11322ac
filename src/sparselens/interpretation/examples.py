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

Top examples rank by signed activation; for variants with negative codes (abstopk) the
negative firings still count towards density and appear among the samples.

Work per batch is vectorised over the non-zero codes (a sort of ``batch x L0`` entries and a
``topk`` over ``n_features x 2 slots``); there is no Python loop over tokens or features.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from sparselens.data.batch import ActivationBatch
from sparselens.data.sites import Sites
from sparselens.dictionaries.base import Dictionary
from sparselens.io.atomic import atomic_write_bytes

_MASK32 = 0xFFFFFFFF
EXAMPLES_FILE = "examples.safetensors"


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
        """Write ``examples.safetensors`` into folder `path` (atomically)."""
        from safetensors.torch import save

        path = Path(path)
        tensors = {"counts": self.counts, "activation_sums": self.activation_sums}
        for name in ("top", "samples"):
            part: ExampleSet = getattr(self, name)
            tensors |= {f"{name}.seq_ids": part.seq_ids, f"{name}.positions": part.positions,
                        f"{name}.activations": part.activations}
            if part.windows is not None:
                tensors[f"{name}.windows"] = part.windows
        meta = {"hookpoint": self.hookpoint, "n_tokens": str(self.n_tokens),
                "window": json.dumps(self.window)}
        contiguous = {k: v.contiguous().cpu() for k, v in tensors.items()}
        atomic_write_bytes(path / EXAMPLES_FILE, save(contiguous, metadata=meta))
        return path / EXAMPLES_FILE

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
                     for name in ("top", "samples")}
            window = json.loads(meta["window"])
            return cls(hookpoint=meta["hookpoint"], n_tokens=int(meta["n_tokens"]),
                       counts=t["counts"], activation_sums=t["activation_sums"],
                       window=tuple(window) if window else None, **parts)
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


class ExampleCollector:
    """Streaming accumulator behind `collect_examples`; feed it codes batch by batch."""

    def __init__(self, n_features: int, n_top: int = 20, n_quantile_samples: int = 40,
                 seed: int = 0, device: str | torch.device = "cpu") -> None:
        if n_top < 1:
            raise ValueError(f"n_top must be at least 1, got {n_top}")
        if n_quantile_samples < 0:
            raise ValueError(f"n_quantile_samples must be >= 0, got {n_quantile_samples}")
        device = torch.device(device)
        self.seed = seed
        self.n_tokens = 0
        self.counts = torch.zeros(n_features, dtype=torch.long, device=device)
        self.sums = torch.zeros(n_features, dtype=torch.float64, device=device)
        self.top = _SlotTable(n_features, n_top, torch.float32, device)
        self.samples = _SlotTable(n_features, n_quantile_samples, torch.long, device)

    def update(self, codes: Tensor, seq_ids: Tensor, positions: Tensor) -> None:
        """Add a batch of dense codes ``(B, n_features)`` for tokens at (seq_ids, positions)."""
        rows, feats = codes.nonzero(as_tuple=True)
        acts = codes[rows, feats].float()
        seq, pos = seq_ids.to(codes.device)[rows], positions.to(codes.device)[rows]
        self.n_tokens += int(codes.shape[0])
        self.counts += torch.bincount(feats, minlength=self.counts.shape[0])
        self.sums.index_add_(0, feats, acts.double())
        self.top.offer(feats, acts, seq, pos, acts)
        self.samples.offer(feats, firing_hash(seq, pos, feats, self.seed), seq, pos, acts)

    def result(self, hookpoint: str) -> FeatureExamples:
        return FeatureExamples(hookpoint=hookpoint, n_tokens=self.n_tokens,
                               counts=self.counts.cpu(), activation_sums=self.sums.cpu(),
                               top=self.top.as_example_set(),
                               samples=self.samples.as_example_set(ascending=True))


def batch_input(batch: ActivationBatch, hookpoint: str, dictionary: Dictionary) -> Tensor:
    """The `Sites` accessor for one hookpoint, kept under its old name for callers of it."""
    return Sites(hookpoint).inputs_for(dictionary, batch)


@torch.no_grad()
def collect_examples(dictionary: Dictionary, batches: Iterable[ActivationBatch], hookpoint: str,
                     n_top: int = 20, n_quantile_samples: int = 40,
                     seed: int = 0) -> FeatureExamples:
    """One pass over `batches`: top-`n_top` examples, a uniform sample of
    `n_quantile_samples` firings, firing counts and activation sums for every feature.

    Codes come from ``dictionary.encode`` in eval mode, so this works for every variant.
    """
    collector = ExampleCollector(dictionary.cfg.n_latents, n_top, n_quantile_samples, seed,
                                 device=next(dictionary.parameters()).device)
    with dictionary.evaluating():
        sites = Sites(hookpoint)
        for index, batch in enumerate(batches):
            codes = dictionary.encode(sites.inputs_for(dictionary, batch, index))
            collector.update(codes, batch.seq_ids, batch.positions)
    if collector.n_tokens == 0:
        raise ValueError("no activations to collect examples from: the batches were empty "
                         "(is the cache split empty?)")
    return collector.result(hookpoint)
