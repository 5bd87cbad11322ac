"""A store with latents of known meaning over real text, and a scripted judge, for the explain
pipeline's unit tests (the real-model path is tested against llama.cpp's server)."""

from __future__ import annotations

import contextlib
import re
from collections import Counter

import torch

from conftest import byte_tokenizer
from sparselens.data.batch import ActivationBatch
from sparselens.interpretation.contexts import ContextReader
from sparselens.interpretation.examples import collect_examples
from sparselens.interpretation.explainer import SHORT_QUESTION
from sparselens.interpretation.llm.base import ChatResponse, LLMError
from sparselens.interpretation.windows import collect_windows

HOOK = "resid.0"
SENTENCES = ["the cat sat on a mat and 12 dogs ran", "a quick brown fox; 7 cats came by",
             "we count 3 or 4 or 5 apples today", "no digits here, only calm words",
             "she wrote 2026 letters to 9 friends", "call me at noon, maybe at 10 or 11"]
RULES = {0: lambda ch: ch == "c", 1: lambda ch: ch.isdigit(), 2: lambda ch: False,
         3: lambda ch: ch == " ", 4: lambda ch: ch in ",;"}
"""Latent -> which characters it fires on (latent 2 never fires)."""
NAMES = {0: "c", 1: "digit", 3: "space", 4: "punctuation"}


class RuleDictionary(torch.nn.Module):
    """Its input already is the codes (one column per rule): encode is ReLU."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.W_dec = torch.nn.Parameter(torch.eye(n))

        class Cfg:
            d_in = n
            n_latents = n
            hookpoint = HOOK
        self.cfg = Cfg()

    @contextlib.contextmanager
    def evaluating(self):
        yield

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * self.scale


def rule_store(copies: int = 6):
    tokenizer = byte_tokenizer()
    rows = [tokenizer(s).input_ids for s in SENTENCES] * copies
    length = max(map(len, rows))
    tokens = torch.tensor([r + [0] * (length - len(r)) for r in rows])
    n = len(RULES)
    seq = torch.arange(len(rows)).repeat_interleave(length)
    pos = torch.arange(length).repeat(len(rows))
    chars = [tokenizer.decode([int(t)]) if t else "" for t in tokens.reshape(-1)]
    strength = 1.0 + ((pos * 7 + seq * 3) % 5).float() / 2  # a spread of activation levels
    acts = torch.tensor([[float(RULES[j](c)) for j in range(n)] for c in chars])
    acts = acts * strength[:, None]
    real = tokens.reshape(-1) != 0
    batch = ActivationBatch({HOOK: acts[real]}, tokens.reshape(-1)[real], seq[real], pos[real])
    dictionary = RuleDictionary(n)
    examples = collect_examples(dictionary, [batch], HOOK, n_top=8, n_quantile_samples=12,
                                n_random=10, pool_size=200)
    examples = collect_windows(dictionary, examples, [batch], before=12, after=4)
    examples.tokens = tokens
    return examples, ContextReader(examples, tokenizer)


class ScriptedJudge:
    """Answers like a perfect reader of these rules: explains by the most frequent marked
    token, says Yes when the explained character is in the text (or all marks are on it)."""

    identity = "scripted"

    def __init__(self, fail_latent_token: str | None = None, garble_token: str | None = None,
                 interrupt_after: int | None = None) -> None:
        self.fail, self.garble, self.interrupt_after = fail_latent_token, garble_token, \
            interrupt_after
        self.calls = 0

    def complete(self, requests, on_result=None):
        out = []
        for i, request in enumerate(requests):
            if self.interrupt_after is not None and self.calls >= self.interrupt_after:
                raise KeyboardInterrupt
            self.calls += 1
            result = self.answer(request.messages[-1][1], request.messages)
            out.append(result)
            if on_result:
                on_result(i, result)
        return out

    def answer(self, prompt: str, messages=()):
        if prompt.startswith("Your answer did not end"):  # the follow-up turn
            first = self.answer(messages[-3][1])  # the original question
            if "[EXPLANATION]" in first.text:
                return first
            return ChatResponse(text="I cannot tell.\nNo idea.")
        common = re.search(r"Most frequent marked tokens: '(.*?)' x", prompt)
        if common or prompt.endswith(SHORT_QUESTION):  # the delphi or the short prompt
            if common:
                token = common.group(1)
            else:
                marks = Counter(re.findall(r"<<(.*?)>>", prompt, flags=re.S))
                token = marks.most_common(1)[0][0]
                token = "␣" if not token.strip() else token
            if token == self.fail:
                return LLMError("unreachable", "scripted outage")
            if token == self.garble:
                return ChatResponse(text="I am not sure what to say about these examples, "
                                    "they vary a lot.\nMaybe this or that.")
            kind = ("digit" if token.isdigit() else "space" if token in ("", "␣")
                    else "punctuation" if token in ",;" else token)
            return ChatResponse(text=f"Thinking...\n[EXPLANATION]: the character {kind}")
        if "intruder" in prompt:
            return ChatResponse(text="1")
        explanation = re.search(r"\n\nExplanation: (.*)$", prompt).group(1)
        text = prompt.removeprefix("Text: ").split("\n\nExplanation: ", 1)[0]
        kind = explanation.removeprefix("the character ")
        test = {"digit": str.isdigit, "space": lambda c: c == " ",
                "punctuation": lambda c: c in ",;"}.get(kind, lambda c: c == kind)
        if not explanation:
            return ChatResponse(text="No", first_token_logprobs={"No": -0.1, "Yes": -2.3})
        if "<<" in text:
            marked = re.findall(r"<<(.*?)>>", text)
            yes = all(all(test(c) for c in m) for m in marked)
        else:
            yes = any(test(c) for c in text)
        return ChatResponse(text="Yes" if yes else "No",
                            first_token_logprobs={"Yes": -0.05, "No": -3.0} if yes
                            else {"Yes": -3.0, "No": -0.05})
