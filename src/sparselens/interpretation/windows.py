"""Second pass: each stored example's feature activation on its neighbouring tokens.

A highlighted context needs the feature's activation on every token of the window, not only
on the example token. The first pass cannot record it: the batches are usually shuffled, so a
token's neighbours may already have streamed past (or not arrived yet) when it turns out to be
a top example. The cheapest correct way is a second pass over the same activations that
encodes only the rows falling inside some example's window: a few rows per example instead of
the whole data set, so the pass costs reading the data, not encoding it.

Finding the windows a row belongs to is one `searchsorted`: examples are sorted by the key
``seq * 2**32 + position``, and a row at (s, p) lies in the window of an example at (s, q)
exactly when ``p - after <= q <= p + before``, a contiguous key range. Memory is one key per
example slot, independent of the data size.

The re-encoded rows are encoded without their batch-mates, which matches the first pass for
every dictionary whose inference-time codes are computed token by token (all built-in
variants in eval mode; BatchTopK uses its fixed inference threshold).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import torch
from torch import Tensor

from sparselens.data.batch import ActivationBatch
from sparselens.data.sites import Sites
from sparselens.dictionaries.base import Dictionary
from sparselens.interpretation.examples import FeatureExamples

_STRIDE = 1 << 32


@torch.no_grad()
def collect_windows(dictionary: Dictionary, examples: FeatureExamples,
                    batches: Iterable[ActivationBatch], before: int = 24,
                    after: int = 8) -> FeatureExamples:
    """Return `examples` with ``windows`` filled for every example set (top, samples and the
    random non-firing tokens, whose windows show whether the context around them is quiet).

    `batches` must cover the same tokens as the first pass (any order, any batch size).
    Window positions with no stored activation (special tokens, beyond the sequence) stay 0.
    """
    if before < 0 or after < 0:
        raise ValueError(f"window sizes must be >= 0, got before={before}, after={after}")
    width = before + 1 + after
    sets = examples.sets()
    seq = torch.cat([part.seq_ids for part in sets.values()], dim=1)
    pos = torch.cat([part.positions for part in sets.values()], dim=1)
    slots_per_feature = seq.shape[1]
    flat_slot = torch.nonzero(seq.reshape(-1) >= 0).squeeze(1)
    keys = seq.reshape(-1)[flat_slot] * _STRIDE + pos.reshape(-1)[flat_slot]
    keys, order = keys.sort()
    flat_slot = flat_slot[order]
    feature_of = torch.div(flat_slot, slots_per_feature, rounding_mode="floor")
    windows = torch.zeros(seq.numel() * width, dtype=torch.float32)

    with dictionary.evaluating():
        for batch in batches:
            _fill_batch(dictionary, examples.hookpoint, batch, keys, flat_slot, feature_of,
                        windows, before, after)

    windows = windows.reshape(seq.shape[0], slots_per_feature, width)
    filled, start = {}, 0
    for name, part in sets.items():
        slots = part.seq_ids.shape[1]
        filled[name] = replace(part, windows=windows[:, start:start + slots].contiguous())
        start += slots
    return replace(examples, window=(before, after), **filled)


def keys_in_ranges(keys: Tensor, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Every (row, key) pair with ``low[row] <= key <= high[row]`` in the sorted `keys`:
    (the rows with at least one, the index into those rows of each pair, the index into
    `keys` of each pair), without a Python loop over rows."""
    lo = torch.searchsorted(keys, low, side="left")
    hi = torch.searchsorted(keys, high, side="right")
    rows = torch.nonzero(hi > lo).squeeze(1)
    matches = (hi - lo)[rows]
    row_of_match = torch.repeat_interleave(torch.arange(rows.numel()), matches)
    first = torch.repeat_interleave(lo[rows] - (matches.cumsum(0) - matches), matches)
    return rows, row_of_match, first + torch.arange(row_of_match.numel())


def _fill_batch(dictionary: Dictionary, hookpoint: str, batch: ActivationBatch, keys: Tensor,
                flat_slot: Tensor, feature_of: Tensor, windows: Tensor, before: int,
                after: int) -> None:
    """Encode the batch rows that fall in some example's window; write their activations."""
    row_keys = batch.seq_ids.long().cpu() * _STRIDE + batch.positions.long().cpu()
    rows, row_of_match, match = keys_in_ranges(keys, row_keys - after, row_keys + before)
    if rows.numel() == 0:
        return
    x = Sites(hookpoint).inputs_for(dictionary, batch)
    x = x[rows.to(x.device)]
    codes = dictionary.encode(x).float().cpu()
    values = codes[row_of_match, feature_of[match]]
    example_pos = keys[match] % _STRIDE
    offset = row_keys[rows][row_of_match] % _STRIDE - example_pos + before
    windows[flat_slot[match] * (before + 1 + after) + offset] = values

