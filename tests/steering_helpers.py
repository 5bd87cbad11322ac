"""A tiny Llama with a dictionary whose latent 0 is planted to write a known token family."""

from __future__ import annotations

import torch

from sparselens.dictionaries.base import Dictionary, build
from sparselens.models.source import LoadedModel

HOOKPOINT = "resid.2"
N_LATENTS = 16


def steerable_llama() -> LoadedModel:
    """The tiny Llama of conftest with its embeddings and unembedding scaled up 50x (a copy
    of its own). At initialisation (std 0.02) the residual stream is ~0.1 long and the logits
    nearly uniform, so any added direction saturates the final norm at once; scaled, the
    residual is ~6 long and the next-token distribution peaked, like a trained model's."""
    from conftest import make_tiny_llama

    loaded = make_tiny_llama(seed=2)
    with torch.no_grad():
        loaded.model.get_input_embeddings().weight.mul_(50)
        loaded.model.get_output_embeddings().weight.mul_(50)
    return loaded


def family_ids(loaded: LoadedModel) -> list[int]:
    """Token ids of the bytes a, e, i, o, u under the byte tokenizer."""
    ids = [loaded.tokenizer.convert_tokens_to_ids(c) for c in "aeiou"]
    assert all(isinstance(i, int) and i > 2 for i in ids)
    return ids


def family_direction(loaded: LoadedModel, ids: list[int]) -> torch.Tensor:
    """Unit direction whose logits are closest (least squares) to "up on `ids`, flat
    elsewhere". In 32 dimensions a random unembedding cannot single out five tokens exactly, so
    tests take the family as the direction's logit-lens tokens (`planted_family`)."""
    w_u = loaded.model.get_output_embeddings().weight.detach()
    target = torch.zeros(w_u.shape[0])
    target[ids] = 1.0
    direction = torch.linalg.lstsq(w_u, (target - target.mean())[:, None]).solution[:, 0]
    return direction / direction.norm()


def planted_family(loaded: LoadedModel, k: int = 5) -> list[int]:
    """The logit-lens tokens of the planted latent 0."""
    from sparselens.steering.logit_lens import logit_lens_top_tokens

    direction = family_direction(loaded, family_ids(loaded))
    return logit_lens_top_tokens(loaded.model, direction[None], k)[0].tolist()


def planted_dictionary(loaded: LoadedModel, seed: int = 0) -> Dictionary:
    """A ReLU SAE at resid.2, random latents except latent 0, whose decoder row is the
    family direction and whose encoder reads that same direction (so it fires on it)."""
    torch.manual_seed(seed)
    d = loaded.model.config.hidden_size
    sae = build("relu", d_in=d, n_latents=N_LATENTS, hookpoint=HOOKPOINT)
    with torch.no_grad():
        sae.W_dec[0] = family_direction(loaded, family_ids(loaded))
        sae.W_enc[:, 0] = sae.W_dec[0]
        sae.b_dec.zero_()
    return sae.eval().requires_grad_(False)
