"""Feature splitting: a parent direction found as a combination of its planted children."""

from __future__ import annotations

import torch

from sparselens.comparison.splitting import feature_splits, fit_splits
from sparselens.evaluation.matching import unit_rows


def test_planted_split_is_found_and_unsplit_latents_are_not() -> None:
    gen = torch.Generator().manual_seed(0)
    d = 48
    large = unit_rows(torch.randn(200, d, generator=gen))
    # Small dictionary: latent 0 is the sum of large latents 5 and 17 (a split parent); latent 1
    # equals large latent 40 (no split); latent 2 is a direction the large one lacks.
    small = torch.stack([large[5] + large[17] * 0.8, large[40], torch.randn(d, generator=gen)])
    fits = fit_splits(small, large)
    assert sorted(fits[0].children) == [5, 17] and fits[0].cosine > 0.999
    assert fits[0].single_cosine < 0.8
    assert fits[1].children == [40] and fits[1].cosine > 0.999
    found = feature_splits(small, large)
    assert [f.latent for f in found] == [0]
    assert found[0].weights[found[0].children.index(5)] > found[0].weights[
        found[0].children.index(17)]
