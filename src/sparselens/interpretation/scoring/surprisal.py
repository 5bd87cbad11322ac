"""Surprisal score (Paulo et al. 2024, after the "explanation as a prompt" idea): does reading
the explanation make a language model less surprised by the latent's activating texts than by
its quiet ones?

For every test context the per-token negative log-likelihood of its text is computed twice
under a causal LM: after a neutral prefix, and after a prefix stating the explanation. The
gain (neutral minus explained) should be larger on activating contexts; the headline is the
AUROC of the gain, activating against quiet (0.5 = the explanation helps both alike).

The model runs in process (default: the embedded gemma-3-270m, a base model, which is what
this score wants: plain text likelihoods, no chat template); servers are not used because
their prompt log-probabilities are unreliable (docs/explain.md). The neutral pass is computed
once per text and reused across explanations and baselines.
"""

from __future__ import annotations

from typing import Any

import torch

from sparselens.interpretation.llm.base import LLMClient
from sparselens.interpretation.scoring.base import HeldOutData, Score
from sparselens.interpretation.scoring.stats import auroc

NEUTRAL = "Text:"
EXPLAINED = "The following text is an example of: {explanation}.\nText:"


class SurprisalScorer:
    name = "surprisal"
    uses_explanation = True
    chance = 0.5

    def __init__(self, model: Any = None, source: str = "gemma-3-270m",
                 batch_size: int = 8) -> None:
        self._model, self.source, self.batch_size = model, source, batch_size
        self._neutral: dict[str, float] = {}

    @property
    def model(self) -> Any:
        if self._model is None:
            from sparselens.models.source import load_model

            self._model = load_model(self.source)
        return self._model

    def score(self, explanation: str | None, data: HeldOutData, llm: LLMClient) -> Score:
        contexts, labels = data.labelled()
        if not contexts:
            return Score(None, {"n": 0})
        texts = [c.text for c in contexts]
        missing = [t for t in dict.fromkeys(texts) if t not in self._neutral]
        self._neutral.update(zip(missing, self.nll(NEUTRAL, missing)))
        explained = self.nll(EXPLAINED.format(explanation=explanation or ""), texts)
        gain = [self._neutral[t] - e for t, e in zip(texts, explained)]
        return Score(auroc(gain, labels), {"n": len(labels), "gain": [round(g, 4) for g in gain]})

    @torch.no_grad()
    def nll(self, prefix: str, texts: list[str]) -> list[float]:
        """Mean negative log-likelihood per token of each text after `prefix`."""
        loaded = self.model
        tokenizer, model = loaded.tokenizer, loaded.model
        head = tokenizer(prefix, add_special_tokens=True).input_ids
        out: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start:start + self.batch_size]
            bodies = [tokenizer(" " + t, add_special_tokens=False).input_ids or
                      [tokenizer.eos_token_id] for t in chunk]
            width = len(head) + max(map(len, bodies))
            pad = tokenizer.pad_token_id or 0
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, body in enumerate(bodies):
                seq = head + body
                ids[row, :len(seq)] = torch.tensor(seq)
                mask[row, :len(seq)] = 1
            logits = model(input_ids=ids.to(loaded.device),
                           attention_mask=mask.to(loaded.device)).logits.float().cpu()
            logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
            taken = logprobs.gather(-1, ids[:, 1:, None]).squeeze(-1)
            for row, body in enumerate(bodies):
                span = taken[row, len(head) - 1:len(head) - 1 + len(body)]
                out.append(float(-span.mean()))
        return out
