"""The surprisal score: its likelihoods against a direct computation, and on the embedded
model, an explanation that fits beats the empty one."""

from __future__ import annotations

import pytest
import torch

from explain_helpers import rule_store
from sparselens.interpretation.scoring import HeldOutData
from sparselens.interpretation.scoring.surprisal import NEUTRAL, SurprisalScorer


def test_nll_is_the_mean_token_loss_of_the_text_after_the_prefix(tiny_llama):
    scorer = SurprisalScorer(model=tiny_llama, batch_size=2)
    texts = ["ab", "a longer text", "xyz"]
    batched = scorer.nll(NEUTRAL, texts)
    tok, model = tiny_llama.tokenizer, tiny_llama.model
    for text, value in zip(texts, batched):
        head = tok(NEUTRAL).input_ids
        body = tok(" " + text, add_special_tokens=False).input_ids
        ids = torch.tensor([head + body])
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        taken = logprobs.gather(-1, ids[0, 1:, None]).squeeze(-1)[len(head) - 1:]
        assert value == pytest.approx(float(-taken.mean()), abs=1e-4)


@pytest.mark.slow
def test_a_fitting_explanation_beats_the_empty_one_on_gemma(gemma):
    _, reader = rule_store()
    data = HeldOutData(1, reader.activating(1, "test", 8), reader.contexts(1, "random", "all"))
    scorer = SurprisalScorer(model=gemma)
    right = scorer.score("numbers: digits like 3, 12 and 2026", data, llm=None).value
    empty = scorer.score("", data, llm=None).value
    assert right is not None and empty is not None and right > empty
