"""The live model behind the viewer: text playground, logit lens and steering.

Everything that runs the model goes through the feature API (`sparselens.lens.Lens`): one
forward that stops after the deepest hookpoint for the playground, `Lens.generate` with an
`AddLatent` edit for steering. Requests are served one at a time (a lock): torch uses both
cores for one forward anyway, and hooks on a shared model must not interleave.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sparselens.interpretation.token_text import is_byte_level, token_texts
from sparselens.lens import AddLatent, Lens
from sparselens.models.source import LoadedModel
from sparselens.server.store import DictionaryStore


class Unavailable(Exception):
    """A request that needs something this server does not have (a model, the lens)."""


@dataclass
class SteerEdit:
    dictionary: str
    latent: int
    coef: float


def _check_length(n_tokens: int, max_tokens: int) -> None:
    if n_tokens > max_tokens:
        raise ValueError(f"the text is {n_tokens} tokens long; this server takes at most "
                         f"{max_tokens}")


class ModelRunner:
    """A loaded model with the served dictionaries attached (built on first use)."""

    def __init__(self, loaded: LoadedModel, stores: Sequence[DictionaryStore]) -> None:
        self.loaded = loaded
        self.stores = {s.name: s for s in stores}
        self._lens: Lens | None = None
        self._byte_level: bool | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.loaded.name

    def token_texts(self, ids: Sequence[int]) -> list[str]:
        if self._byte_level is None:
            self._byte_level = is_byte_level(self.loaded.tokenizer)
        return token_texts(self.loaded.tokenizer, ids, self._byte_level)

    def _get_lens(self) -> Lens:
        if self._lens is None:
            self._lens = Lens(self.loaded, {n: s.module() for n, s in self.stores.items()})
        return self._lens

    # ---- text playground ----

    @torch.no_grad()
    def encode(self, text: str, dictionary: str, max_tokens: int) -> tuple[list[int], list[bool],
                                                                            torch.Tensor]:
        """(token ids, special flags, dense codes ``(L, n_latents)``) of `text`."""
        with self._lock:
            lens = self._get_lens()
            tokens = lens.tokenize([text])
            _check_length(tokens.ids.shape[1], max_tokens)
            encoding = lens.encode(tokens, names=[dictionary])
            codes = encoding.codes[dictionary].dense().reshape(tokens.ids.shape[1], -1)
        return tokens.ids[0].tolist(), tokens.special[0].tolist(), codes.float().cpu()

    def playground(self, text: str, dictionary: str, latent: int | None, max_tokens: int,
                   top_k: int = 8) -> dict[str, Any]:
        """Every token of `text` with the chosen latent's activation and, per token, the
        `top_k` latents firing there (so a click needs no second request)."""
        ids, special, codes = self.encode(text, dictionary, max_tokens)
        values, latents = codes.topk(min(top_k, codes.shape[1]), dim=1)
        firing = [[{"latent": int(j), "act": round(float(v), 4)}
                   for v, j in zip(vs, js) if v != 0]
                  for vs, js in zip(values.tolist(), latents.tolist())]
        chosen = codes[:, latent].tolist() if latent is not None else None
        return {"dictionary": dictionary, "latent": latent,
                "tokens": self.token_texts(ids), "special": special,
                "acts": [round(a, 4) for a in chosen] if chosen is not None else None,
                "firing": firing}

    # ---- logit lens ----

    def unembedding(self) -> torch.Tensor | None:
        head = self.loaded.model.get_output_embeddings()
        return head.weight if head is not None else None

    @torch.no_grad()
    def logit_lens(self, store: DictionaryStore, latent: int, k: int = 10) -> dict[str, Any]:
        """Top and bottom output tokens of the latent's decoder direction through the
        unembedding, ``W_U @ W_dec[latent]`` (no final norm: the direct effect on logits up to
        the norm's scale, as sae-vis and Neuronpedia show it)."""
        w_u = self.unembedding()
        direction = store.decoder_row(latent)
        if w_u is None or w_u.shape[1] != direction.shape[0]:
            raise Unavailable("the decoder does not write to the model's residual width")
        logits = w_u.float() @ direction.to(w_u.device)
        top = logits.topk(k)
        bottom = (-logits).topk(k)

        def listing(values: torch.Tensor, ids: torch.Tensor, sign: float) -> list[dict]:
            texts = self.token_texts(ids.tolist())
            return [{"token": t, "value": round(sign * float(v), 4)}
                    for t, v in zip(texts, values)]

        return {"top": listing(top.values, top.indices, 1.0),
                "bottom": listing(bottom.values, bottom.indices, -1.0)}

    # ---- steering ----

    def steer(self, prompt: str, edits: Sequence[SteerEdit], max_new_tokens: int
              ) -> dict[str, Any]:
        """Greedy continuations of `prompt` without and with the edits, side by side."""
        with self._lock:
            lens = self._get_lens()
            applied = [AddLatent(e.dictionary, latent=e.latent, coef=e.coef) for e in edits]
            plain = lens.generate(prompt, max_new_tokens=max_new_tokens, do_sample=False)
            steered = lens.generate(prompt, max_new_tokens=max_new_tokens, edits=applied,
                                    do_sample=False)
        return {"prompt": prompt, "plain": plain.texts[0], "steered": steered.texts[0]}
