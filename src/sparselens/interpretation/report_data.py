"""The JSON the report page renders: features, their examples, the tokens around them.

Kept compact because a report lists thousands of features:

- ``vocab``: the display text of every token id that occurs, once; contexts refer to it by
  index.
- ``seqs``: ``[seq_id, start, [vocab index, ...]]``, only the span of each sequence that some
  example window covers (never the whole cache).
- an example: ``[seq_id, position, activation, [offset, value, offset, value, ...]]`` with the
  non-zero activations of the window (offset 0 = ``before`` tokens left of the example).
- a quantile sample additionally starts with its bin: ``[bin, seq_id, ...]``.

Numbers are rounded to 4 significant digits, which is all a reader can see.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from sparselens.interpretation.examples import ExampleSet, FeatureExamples
from sparselens.interpretation.token_text import special_ids, token_texts

DEFAULT_WINDOW = (24, 8)
"""Tokens shown before and after an example when no activation windows were collected."""

HEADLINE_METRICS: tuple[tuple[str, tuple[str, ...], float], ...] = (
    ("FVU", ("fvu",), 1.0),
    ("Explained variance", ("explained_variance",), 1.0),
    ("L0", ("l0",), 1.0),
    ("Dead latents %", ("dead_fraction", "dead_frac"), 100.0),
    ("Dead latents %", ("dead_pct", "dead_percent"), 1.0),
    ("Loss recovered", ("loss_recovered", "ce_loss_recovered", "frac_recovered"), 1.0),
    ("KL divergence", ("kl_spliced", "kl", "kl_div", "kl_divergence"), 1.0),
)
"""(label, metric names (last dotted component), multiplier) shown as cards in the header."""


def round_significant(values: Tensor, digits: int = 4) -> list[float]:
    """Round to `digits` significant digits, vectorised, as Python floats."""
    v = values.double()
    magnitude = torch.floor(torch.log10(v.abs().clamp_min(1e-300)))
    scale = torch.pow(10.0, digits - 1 - magnitude)
    return torch.where(v == 0, v, torch.round(v * scale) / scale).tolist()


def _round(value: float) -> float | None:
    if not math.isfinite(value):
        return None
    return float(f"{value:.4g}")


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested metrics as ``{"a.b": scalar}``; non-finite numbers become None (JSON null)."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= flatten_metrics(value, prefix=f"{name}.")
        elif isinstance(value, bool) or value is None or isinstance(value, str):
            flat[name] = value
        elif isinstance(value, (int, float)):
            flat[name] = value if math.isfinite(value) else None
    return flat


def headline_metrics(flat: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The few metrics a reader looks at first, found by name anywhere in the nesting."""
    cards, taken = [], set()
    for label, names, scale in HEADLINE_METRICS:
        if label in taken:
            continue
        for key, value in flat.items():
            if key.rsplit(".", 1)[-1].lower() in names and isinstance(value, (int, float)) \
                    and not isinstance(value, bool):
                cards.append({"label": label, "value": _round(value * scale), "key": key})
                taken.add(label)
                break
    return cards


class _Vocab:
    """Compact indices for the token ids a report uses."""

    def __init__(self) -> None:
        self.index: dict[int, int] = {}

    def encode(self, ids: Iterable[int]) -> list[int]:
        return [self.index.setdefault(i, len(self.index)) for i in ids]


def _sequence_spans(examples: FeatureExamples, tokens: Tensor,
                    window: tuple[int, int], vocab: _Vocab) -> list[list[Any]]:
    """The covered token span of every sequence an example lives in."""
    seq = torch.cat([examples.top.seq_ids.reshape(-1), examples.samples.seq_ids.reshape(-1)])
    pos = torch.cat([examples.top.positions.reshape(-1), examples.samples.positions.reshape(-1)])
    valid = seq >= 0
    seq, pos = seq[valid], pos[valid]
    if seq.numel() and int(seq.max()) >= tokens.shape[0]:
        raise ValueError(f"the examples refer to sequence {int(seq.max())} but the token table "
                         f"has only {tokens.shape[0]} sequences; pass the tokens of the cache "
                         "the examples were collected from")
    used = torch.unique(seq)
    start = torch.full((tokens.shape[0],), tokens.shape[1], dtype=torch.long)
    end = torch.zeros(tokens.shape[0], dtype=torch.long)
    start.scatter_reduce_(0, seq, (pos - window[0]).clamp_min(0), reduce="amin")
    end.scatter_reduce_(0, seq, (pos + window[1] + 1).clamp_max(tokens.shape[1]), reduce="amax")
    spans = []
    for s in used.tolist():
        a, b = int(start[s]), int(end[s])
        spans.append([s, a, vocab.encode(tokens[s, a:b].tolist())])
    return spans


def _window_values(windows: Tensor) -> list[list[Any]]:
    """Per row of `windows` ``(examples, width)``, its non-zero entries as
    ``[offset, value, offset, value, ...]`` (interleaved by list slicing, not per entry)."""
    row, offset = torch.nonzero(windows, as_tuple=True)
    interleaved: list[Any] = [0] * (2 * row.numel())
    interleaved[0::2] = offset.tolist()
    interleaved[1::2] = round_significant(windows[row, offset])
    ends = (torch.bincount(row, minlength=windows.shape[0]).cumsum(0) * 2).tolist()
    return [interleaved[a:b] for a, b in zip([0, *ends[:-1]], ends)]


def _example_rows(part: ExampleSet, feature_ids: Tensor, center: int) -> list[list[list[Any]]]:
    """Per feature in `feature_ids`, its valid examples as ``[seq, pos, act, window]``."""
    valid = part.valid[feature_ids]
    seqs = part.seq_ids[feature_ids][valid].tolist()
    positions = part.positions[feature_ids][valid].tolist()
    acts = round_significant(part.activations[feature_ids][valid])
    windows = (_window_values(part.windows[feature_ids][valid]) if part.windows is not None
               else [[center, a] for a in acts])
    rows = [list(example) for example in zip(seqs, positions, acts, windows)]
    ends = valid.sum(1).cumsum(0).tolist()
    return [rows[a:b] for a, b in zip([0, *ends[:-1]], ends)]


def build_report_data(examples: FeatureExamples, tokens: Tensor, tokenizer: object, *,
                      n_quantile_bins: int = 5, meta: Mapping[str, Any] | None = None,
                      metrics: Mapping[str, Any] | None = None,
                      plots: Iterable[Mapping[str, str]] = ()) -> dict[str, Any]:
    """Everything the page shows, as a JSON-serialisable dict."""
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be (n_sequences, context_len), got {tuple(tokens.shape)}")
    window = examples.window or DEFAULT_WINDOW
    vocab = _Vocab()
    spans = _sequence_spans(examples, tokens.long().cpu(), window, vocab)
    live = torch.nonzero(examples.counts > 0).squeeze(1)
    top = _example_rows(examples.top, live, window[0])
    samples = _example_rows(examples.samples, live, window[0])
    bins = examples.quantile_bins(n_quantile_bins)[live].tolist()
    density = round_significant(examples.density)
    maxima = round_significant(examples.max_activation)
    means = round_significant(examples.mean_activation)
    features: list[dict[str, Any]] = [{"i": i, "n": 0} for i in range(examples.n_features)]
    for local, f in enumerate(live.tolist()):
        features[f] = {"i": f, "n": int(examples.counts[f]), "d": density[f], "max": maxima[f],
                       "mean": means[f], "top": top[local],
                       "q": [[b, *row] for b, row in zip(bins[local], samples[local])]}
    ids = list(vocab.index)
    flat_metrics = flatten_metrics(metrics or {})
    return {
        "meta": {**(meta or {}), "hookpoint": examples.hookpoint, "n_tokens": examples.n_tokens,
                 "n_features": examples.n_features, "n_live": int(live.numel())},
        "metrics": flat_metrics, "headline": headline_metrics(flat_metrics),
        "plots": list(plots), "window": list(window), "has_windows": examples.window is not None,
        "bins": n_quantile_bins, "vocab": token_texts(tokenizer, ids),
        "special": [vocab.index[i] for i in special_ids(tokenizer) if i in vocab.index],
        "seqs": spans, "features": features,
    }
