"""Every request and its answer on disk, keyed by the full request and the model identity.

A rerun (or a run resumed after a crash) finds every answer it already paid for; each answer
is written atomically the moment it arrives, so a crash loses at most the requests in flight.
Errors are never cached: a retry can succeed. Hits and misses are counted so callers (and
tests) can see that nothing was regenerated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from sparselens.interpretation.llm.base import (
    ChatRequest,
    ChatResponse,
    LLMClient,
    OnResult,
    Result,
)
from sparselens.io.atomic import atomic_write_json


class CachedClient:
    """Wraps a client with an on-disk response cache in `folder`."""

    def __init__(self, client: LLMClient, folder: str | os.PathLike) -> None:
        self.client = client
        self.identity = client.identity
        self.folder = Path(folder)
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def lookup(self, request: ChatRequest) -> ChatResponse | None:
        path = self._path(request.key(self.identity))
        try:
            data = json.loads(path.read_text())
            return ChatResponse.from_json(data["response"], cached=True)
        except (FileNotFoundError, KeyError, ValueError, TypeError):
            return None

    def complete(self, requests: Sequence[ChatRequest],
                 on_result: OnResult | None = None) -> list[Result]:
        """Cached answers at once; the rest from the backend, each distinct request once
        (identical requests in one call share one answer)."""
        results: list[Result | None] = [None] * len(requests)
        waiting: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            key = request.key(self.identity)
            if key in waiting:
                waiting[key].append(i)
                continue
            found = self.lookup(request)
            if found is None:
                waiting[key] = [i]
                continue
            self.hits += 1
            results[i] = found
            if on_result:
                on_result(i, found)
        keys = list(waiting)

        def store(j: int, result: Result) -> None:
            first = waiting[keys[j]][0]
            if results[first] is not None:
                return
            if isinstance(result, ChatResponse):
                request = requests[first]
                atomic_write_json(self._path(keys[j]),
                                  {"model": self.identity, "request": _request_json(request),
                                   "response": result.to_json()})
            for i in waiting[keys[j]]:
                results[i] = result
                if on_result:
                    on_result(i, result)

        if keys:
            self.misses += len(keys)
            answers = self.client.complete([requests[waiting[k][0]] for k in keys], store)
            for j, answer in enumerate(answers):
                store(j, answer)
        return [r if r is not None else _lost() for r in results]


def _lost() -> Result:
    from sparselens.interpretation.llm.base import LLMError

    return LLMError("malformed", "the backend returned no answer for this request")


def _request_json(request: ChatRequest) -> dict:
    return {"messages": [list(m) for m in request.messages], "max_tokens": request.max_tokens,
            "temperature": request.temperature, "top_logprobs": request.top_logprobs}
