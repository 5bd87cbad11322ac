"""Steering on the embedded gemma-3-270m (slow): a latent whose decoder row is a token's
unembedding direction raises that token's probability monotonically over a range (not
beyond: far out the model's later layers turn it into something else), and bad
input fails before generation."""

from __future__ import annotations

import pytest
import torch

from sparselens.dictionaries.base import build
from sparselens.steering import SteeringInputError, family_probability, latent_steer, side_by_side

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lens(gemma):
    from sparselens.lens import Lens

    torch.manual_seed(0)
    sae = build("topk", d_in=640, n_latents=64, k=8, hookpoint="resid.6")
    dog = gemma.tokenizer.encode(" dog", add_special_tokens=False)
    with torch.no_grad():
        row = gemma.model.get_output_embeddings().weight[dog[0]].float()
        sae.W_dec[0] = row / row.norm()
    return Lens(gemma, {"sae": sae}), dog[0]


def test_a_token_direction_raises_its_probability_monotonically(lens):
    lens, dog = lens
    # measured: 0.037, 0.065, 0.101, 0.138 at 0..200, then 0.004 at 400 (the residual at
    # resid.6 has a median norm of ~3,200, mostly in a few massive dimensions)
    probs = family_probability(lens, latent_steer("sae", 0), [0, 50, 100, 200],
                               ["I took my"], [dog])
    assert all(b > a for a, b in zip(probs, probs[1:])), probs
    assert probs[-1] > 3 * probs[0]


def test_bad_input_fails_before_generation(lens, monkeypatch):
    lens, _ = lens
    monkeypatch.setattr(lens, "generate", lambda *a, **k: pytest.fail("generation started"))
    with pytest.raises(SteeringInputError, match="unknown latent"):
        side_by_side(lens, latent_steer("sae", 64), 1.0, "Hello", 4)
    with pytest.raises(SteeringInputError, match="context"):
        side_by_side(lens, latent_steer("sae", 0), 1.0, "Hello", 10**6)
