"""A chat model run in this process with transformers: the fallback when no server runs.

Loads a local model folder or a GGUF file (``gguf_file=``, dequantised to float32 by
transformers; about three times slower than llama.cpp on CPU, see docs/explain.md). Requests
are generated in batches (left padding, greedy at temperature 0), and the first generated
token's top alternatives come from the generation scores.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from sparselens.interpretation.llm.base import (
    ChatRequest,
    ChatResponse,
    LLMError,
    OnResult,
    Result,
)


class TransformersClient:
    def __init__(self, source: str | os.PathLike, *, batch_size: int = 4,
                 device: str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(source).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"model {path} does not exist (a folder or a .gguf file)")
        kwargs = {"gguf_file": path.name} if path.suffix == ".gguf" else {}
        folder = path.parent if path.suffix == ".gguf" else path
        self.tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **kwargs)
        self.model.to(device).eval()
        self.batch_size = batch_size
        self.identity = f"transformers:{path.name}:{path.stat().st_size if path.is_file() else ''}"

    def complete(self, requests: Sequence[ChatRequest],
                 on_result: OnResult | None = None) -> list[Result]:
        results: list[Result] = []
        # same settings batch together (one generate call needs one max_tokens/temperature)
        order = sorted(range(len(requests)), key=lambda i: (requests[i].max_tokens,
                                                            requests[i].temperature))
        by_index: dict[int, Result] = {}
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            for i, result in zip(chunk, self._batch([requests[i] for i in chunk])):
                by_index[i] = result
                if on_result:
                    on_result(i, result)
        results = [by_index[i] for i in range(len(requests))]
        return results

    @torch.no_grad()
    def _batch(self, requests: list[ChatRequest]) -> list[Result]:
        try:
            prompts = [self.tokenizer.apply_chat_template(
                [{"role": r, "content": c} for r, c in req.messages], tokenize=False,
                add_generation_prompt=True) for req in requests]
        except (ValueError, TypeError) as err:
            return [LLMError("malformed", f"cannot build the chat prompt ({err})")] * len(requests)
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True,
                                add_special_tokens=False).to(self.model.device)
        first = requests[0]
        sampling = {"do_sample": False} if first.temperature == 0 else {
            "do_sample": True, "temperature": first.temperature}
        out = self.model.generate(**inputs, max_new_tokens=max(r.max_tokens for r in requests),
                                  output_scores=True, return_dict_in_generate=True,
                                  pad_token_id=self.tokenizer.pad_token_id, **sampling)
        new = out.sequences[:, inputs["input_ids"].shape[1]:]
        first_logprobs = torch.log_softmax(out.scores[0].float(), dim=-1)
        results: list[Result] = []
        for row, req in enumerate(requests):
            ids = new[row, :req.max_tokens].tolist()
            if self.tokenizer.eos_token_id in ids:
                ids = ids[:ids.index(self.tokenizer.eos_token_id)]
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            tops: dict[str, float] = {}
            if req.top_logprobs:
                values, indices = first_logprobs[row].topk(req.top_logprobs)
                for value, index in zip(values.tolist(), indices.tolist()):
                    token = self.tokenizer.decode([index])
                    tops[token] = max(tops.get(token, float("-inf")), value)
            results.append(ChatResponse(text=text, first_token_logprobs=tops))
        return results
