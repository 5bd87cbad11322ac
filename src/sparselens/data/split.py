"""Which sequences are held out: a rule fixed at harvest time and recorded in the manifest.

The split is by sequence, never by token, so no held-out token ever shares a context with a
training token. Membership depends only on the sequence id, the fraction and a seed (a
splitmix64 hash mapped to [0, 1)), so the harvester and every reader agree without storing
a list. Sequence 0 is always train and sequence 1 always held out (when the fraction is
positive), so tiny caches still have both splits.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

RULE = ("seq 0 train, seq 1 held out, otherwise held out iff "
        "splitmix64(seq_id + seed * 0x9E3779B97F4A7C15) / 2**64 < fraction")

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def check_fraction(fraction: float) -> float:
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"held-out fraction must be in [0, 1), got {fraction}")
    return float(fraction)


def heldout_mask(seq_ids: Tensor, fraction: float, seed: int) -> Tensor:
    """Bool tensor: True where the sequence belongs to the held-out split."""
    ids = seq_ids.detach().cpu().numpy().astype(np.uint64)
    with np.errstate(over="ignore"):
        mixed = _splitmix64(ids + np.uint64(seed % 2**64) * _GOLDEN)
    unit = (mixed >> np.uint64(11)).astype(np.float64) * 2.0**-53
    held = unit < check_fraction(fraction)
    if fraction > 0:
        held[ids == 0] = False
        held[ids == 1] = True
    return torch.from_numpy(held).to(seq_ids.device)
