"""The feature API on the embedded gemma-3-270m (slow: loads the real model)."""

from __future__ import annotations

import pytest
import torch

from sparselens.dictionaries import build
from sparselens.lens import AddLatent, Lens

pytestmark = pytest.mark.slow

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def lens(gemma) -> Lens:
    torch.manual_seed(0)
    sae = build("topk", d_in=640, n_latents=2048, k=32, hookpoint="resid.6")
    return Lens(gemma, {"sae": sae})


def test_empty_edit_and_error_splice_reproduce_gemma(lens, gemma) -> None:
    tokens = lens.tokenize([PROMPT, "Sparse autoencoders open models up."])
    clean = gemma.model(input_ids=tokens.ids, attention_mask=tokens.attention_mask).logits
    assert torch.equal(lens.forward(tokens).logits, clean)
    with_error = lens.forward(tokens, splice=["sae"], keep_error=True).logits
    assert torch.allclose(with_error, clean, rtol=1e-4, atol=1e-3)
    codes = lens.encode(tokens).codes["sae"]
    assert (codes.l0()[~tokens.special] == 32).all()


def test_edit_during_cached_generation_matches_recomputation(lens) -> None:
    edit = AddLatent("sae", latent=7, coef=400.0)
    gen = lens.generate(PROMPT, max_new_tokens=4, edits=[edit])
    ids = lens.tokenize(PROMPT).ids
    for _ in range(4):
        logits = lens.forward(ids, edits=[edit]).logits
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(gen.ids, ids)
    assert gen.texts[0] != lens.generate(PROMPT, max_new_tokens=4).texts[0]
