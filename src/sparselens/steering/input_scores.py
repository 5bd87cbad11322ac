"""Input scores: is a latent about the tokens it reads rather than the ones it writes?
(Arad, Mueller and Belinkov 2025, section 3.)

For latent j, take its top-activating sequences in a corpus (up to 100, ranked by the
latent's largest activation in the sequence) and, in each, the input token where it fires
most. The input score is the fraction of those tokens that are among the latent's logit-lens
tokens. The paper reads the top examples from Neuronpedia; here they come from the texts you
pass (the built-in corpus in the CLI), and a latent with fewer than `min_examples` activating
sequences gets NaN (the paper leaves such latents out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sparselens.steering.checks import check_latents
from sparselens.steering.lens_access import model_of, truncated_tokens
from sparselens.steering.logit_lens import logit_lens_top_tokens
from sparselens.steering.output_scores import LOGIT_LENS_K


@dataclass
class InputScore:
    latent: int
    score: float
    n_examples: int


@dataclass
class _Peaks:
    """Per (sequence, latent): the largest activation and the token id where it occurred."""

    value: torch.Tensor
    token: torch.Tensor


@torch.no_grad()
def sequence_peaks(lens: Any, name: str, texts: Sequence[str], latents: Sequence[int], *,
                   batch_size: int = 8, max_length: int | None = 128) -> _Peaks:
    """Each latent's peak activation and peak token in each text (special tokens skipped)."""
    index = torch.tensor(list(latents), dtype=torch.long)
    values, tokens = [], []
    for start in range(0, len(texts), batch_size):
        toks = truncated_tokens(lens, texts[start:start + batch_size], max_length)
        enc = lens.encode(toks)
        codes = enc.codes[name].dense().float()[..., index.to(enc.codes[name].values.device)]
        valid = (toks.attention_mask.bool() & ~toks.special.bool()).to(codes.device)
        codes = codes.masked_fill(~valid[..., None], -1.0)
        peak, where = codes.max(dim=1)                       # (B, n)
        values.append(peak.cpu())
        tokens.append(torch.gather(toks.ids.to(where.device), 1, where).cpu())
    return _Peaks(torch.cat(values), torch.cat(tokens))


def input_scores(lens: Any, name: str, texts: Sequence[str], latents: Sequence[int], *,
                 top_k: int = LOGIT_LENS_K, n_examples: int = 100, min_examples: int = 10,
                 batch_size: int = 8, max_length: int | None = 128) -> list[InputScore]:
    """Input scores of `latents` of dictionary `name` over `texts`, in the order given."""
    latents = [int(j) for j in latents]
    check_latents(lens, name, latents)
    family = logit_lens_top_tokens(model_of(lens),
                                   lens.dictionaries[name].W_dec.detach()[latents], top_k)
    peaks = sequence_peaks(lens, name, texts, latents, batch_size=batch_size,
                           max_length=max_length)
    scores = []
    for column, latent in enumerate(latents):
        value, token = peaks.value[:, column], peaks.token[:, column]
        order = value.argsort(descending=True)
        order = order[value[order] > 0][:n_examples]
        if order.numel() < min_examples:
            scores.append(InputScore(latent, float("nan"), int(order.numel())))
            continue
        hits = torch.isin(token[order], family[column])
        scores.append(InputScore(latent, float(hits.float().mean()), int(order.numel())))
    return scores
