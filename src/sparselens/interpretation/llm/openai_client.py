"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp's server, ...) through the
``openai`` package.

Requests run on a thread pool of ``concurrency`` workers. Each has its own timeout; 429, 5xx,
timeouts, refused connections and unreadable answers are retried with exponential backoff
and jitter, then returned as `LLMError` for that request only. 401/403 and 404 raise
`LLMConfigError` at once with what to fix: every other request would fail the same way.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from sparselens.interpretation.llm.base import (
    ChatRequest,
    ChatResponse,
    LLMConfigError,
    LLMError,
    OnResult,
    Result,
)

URL_ENV, MODEL_ENV, KEY_ENV = "SPARSELENS_LLM_URL", "SPARSELENS_LLM_MODEL", "SPARSELENS_LLM_API_KEY"


class OpenAIClient:
    """Chat completions against `base_url` (``.../v1``); options fall back to the
    environment: SPARSELENS_LLM_URL, SPARSELENS_LLM_MODEL, SPARSELENS_LLM_API_KEY (then
    OPENAI_API_KEY)."""

    def __init__(self, base_url: str | None = None, model: str | None = None,
                 api_key: str | None = None, *, concurrency: int = 4, timeout: float = 120.0,
                 retries: int = 4, backoff: float = 1.0, identity: str | None = None) -> None:
        from openai import OpenAI

        base_url = base_url or os.environ.get(URL_ENV)
        if not base_url:
            raise LLMConfigError(f"no server URL: pass --llm URL (e.g. http://127.0.0.1:8080/v1)"
                                 f" or set {URL_ENV}")
        if concurrency < 1 or timeout <= 0 or retries < 0:
            raise ValueError(f"concurrency must be >= 1, timeout > 0 and retries >= 0; got "
                             f"{concurrency}, {timeout} and {retries}")
        self.base_url = base_url.rstrip("/")
        self.model = model or os.environ.get(MODEL_ENV) or "local"
        key = api_key or os.environ.get(KEY_ENV) or os.environ.get("OPENAI_API_KEY") or "none"
        self.client = OpenAI(base_url=self.base_url, api_key=key, timeout=timeout,
                             max_retries=0)
        self.concurrency, self.retries, self.backoff = concurrency, retries, backoff
        self.identity = identity or f"openai:{self.model}"

    def complete(self, requests: Sequence[ChatRequest],
                 on_result: OnResult | None = None) -> list[Result]:
        results: list[Result] = [LLMError("malformed", "not run")] * len(requests)
        with ThreadPoolExecutor(self.concurrency) as pool:
            futures = {pool.submit(self._one, r): i for i, r in enumerate(requests)}
            for future in as_completed(futures):
                i = futures[future]
                results[i] = future.result()
                if on_result:
                    on_result(i, results[i])
        return results

    def _one(self, request: ChatRequest) -> Result:
        import openai

        last: LLMError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1) * (0.5 + random.random()))
            try:
                return self._call(request)
            except openai.AuthenticationError as err:
                raise LLMConfigError(f"{self.base_url} refused the API key (HTTP "
                                     f"{err.status_code}); set {KEY_ENV} or pass --api-key"
                                     ) from None
            except openai.PermissionDeniedError as err:
                raise LLMConfigError(f"{self.base_url} denied access (HTTP {err.status_code}): "
                                     "check the API key's permissions") from None
            except openai.NotFoundError:
                raise LLMConfigError(f"{self.base_url} answered 404 for model {self.model!r}: "
                                     "check the URL (it should end in /v1) and the model name "
                                     f"({MODEL_ENV} or --model)") from None
            except openai.APITimeoutError:
                last = LLMError("timeout", f"{self.base_url} did not answer in time")
            except openai.APIConnectionError as err:
                last = LLMError("unreachable", f"cannot reach {self.base_url} ({err}); is the "
                                "server running?")
            except openai.APIStatusError as err:
                last = LLMError("http", f"{self.base_url} answered HTTP {err.status_code}")
                if err.status_code != 429 and err.status_code < 500:
                    return last
            except (ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
                last = LLMError("malformed", f"unreadable answer from {self.base_url} ({err})")
        assert last is not None
        return last

    def _call(self, request: ChatRequest) -> ChatResponse:
        extra: dict[str, Any] = {}
        if request.top_logprobs:
            extra = {"logprobs": True, "top_logprobs": request.top_logprobs}
        response = self.client.chat.completions.create(
            model=self.model, max_tokens=request.max_tokens, temperature=request.temperature,
            messages=[{"role": role, "content": content} for role, content in request.messages],
            **extra)
        choice = response.choices[0]
        text = choice.message.content
        if not isinstance(text, str):
            raise ValueError("the answer has no message content")
        return ChatResponse(text=text, first_token_logprobs=_first_token(choice))


def _first_token(choice: Any) -> dict[str, float]:
    """Top alternatives of the first generated token, wherever the server put them."""
    logprobs = getattr(choice, "logprobs", None)
    if logprobs is None:
        return {}
    content = getattr(logprobs, "content", None)
    if content is None:
        content = (getattr(logprobs, "model_extra", None) or {}).get("content")
    if not content:
        return {}
    first = content[0]
    tops = first.get("top_logprobs") if isinstance(first, dict) else first.top_logprobs
    out: dict[str, float] = {}
    for top in tops or []:
        token = top["token"] if isinstance(top, dict) else top.token
        logprob = top["logprob"] if isinstance(top, dict) else top.logprob
        out[token] = max(out.get(token, float("-inf")), float(logprob))
    return out
