"""The LLM clients: the on-disk cache, the OpenAI-compatible client against a real llama.cpp
server (the embedded gemma GGUF) and against servers that fail in the ways real ones do."""

from __future__ import annotations

import pytest

from llm_helpers import chat_body, misbehaving_server
from sparselens.interpretation.llm import (
    CachedClient,
    ChatRequest,
    ChatResponse,
    LLMConfigError,
    LLMError,
)
from sparselens.interpretation.llm.openai_client import OpenAIClient
from sparselens.interpretation.llm.server import LocalServer, free_port

QUESTION = ChatRequest(messages=(("user", "Is Paris in France? Answer Yes or No."),),
                       max_tokens=3, top_logprobs=5)


class CountingClient:
    """A deterministic in-memory backend that records what it was asked."""

    identity = "counting"

    def __init__(self) -> None:
        self.asked: list[ChatRequest] = []

    def complete(self, requests, on_result=None):
        out = []
        for i, request in enumerate(requests):
            self.asked.append(request)
            result = ChatResponse(text=f"answer to {request.messages[-1][1]}",
                                  first_token_logprobs={"Yes": -0.1, "No": -2.4})
            out.append(result)
            if on_result:
                on_result(i, result)
        return out


def test_cache_answers_repeats_from_disk(tmp_path):
    backend = CountingClient()
    requests = [ChatRequest(messages=(("user", f"q{i}"),)) for i in range(3)]
    first = CachedClient(backend, tmp_path).complete(requests)
    again = CachedClient(backend, tmp_path)
    second = again.complete(requests + [ChatRequest(messages=(("user", "new"),))])
    assert [r.text for r in first] == [r.text for r in second[:3]]
    assert (again.hits, again.misses) == (3, 1) and len(backend.asked) == 4
    assert second[0].cached and not first[0].cached
    # the key covers every field of the request
    other = ChatRequest(messages=(("user", "q0"),), max_tokens=7)
    assert other.key("counting") != requests[0].key("counting")
    assert requests[0].key("counting") != requests[0].key("other model")


def test_yes_probability_reads_first_token_alternatives():
    response = ChatResponse(text="Yes", first_token_logprobs={"Yes": -0.2231, " no": -1.6094,
                                                              "Maybe": -3.0})
    assert response.yes_probability() == pytest.approx(0.8 / (0.8 + 0.2), abs=1e-3)
    assert ChatResponse(text="No, never").yes_probability() == 0.0
    assert ChatResponse(text="I think so").yes_probability() is None


def test_unreachable_server_is_an_error_per_request_not_a_crash():
    client = OpenAIClient(f"http://127.0.0.1:{free_port()}/v1", retries=1, backoff=0.01)
    results = client.complete([QUESTION, QUESTION])
    assert all(isinstance(r, LLMError) and r.kind == "unreachable" for r in results)
    assert "is the server running" in str(results[0])


def test_rate_limits_and_server_errors_are_retried():
    def reply(call):
        return (429, b"{}", 0) if call == 0 else (503, b"{}", 0) if call == 1 else \
            (200, chat_body("Yes"), 0)

    with misbehaving_server(reply) as (url, calls):
        [result] = OpenAIClient(url, retries=3, backoff=0.01).complete([QUESTION])
    assert isinstance(result, ChatResponse) and result.text == "Yes" and len(calls) == 3


def test_slow_and_malformed_answers_become_errors():
    with misbehaving_server(lambda call: (200, chat_body("late"), 3.0)) as (url, _):
        [slow] = OpenAIClient(url, retries=0, timeout=0.5).complete([QUESTION])
    assert isinstance(slow, LLMError) and slow.kind == "timeout"
    with misbehaving_server(lambda call: (200, b"{not json", 0)) as (url, calls):
        [bad] = OpenAIClient(url, retries=1, backoff=0.01).complete([QUESTION])
    assert isinstance(bad, LLMError) and bad.kind == "malformed" and len(calls) == 2


def test_wrong_key_and_wrong_url_stop_with_what_to_fix():
    with misbehaving_server(lambda call: (401, b'{"error": "bad key"}', 0)) as (url, _), \
            pytest.raises(LLMConfigError, match="API key"):
        OpenAIClient(url).complete([QUESTION])
    with misbehaving_server(lambda call: (404, b'{"error": "no"}', 0)) as (url, _), \
            pytest.raises(LLMConfigError, match="404"):
        OpenAIClient(url).complete([QUESTION])
    with pytest.raises(LLMConfigError, match="--llm URL"):
        OpenAIClient(None)


@pytest.fixture(scope="module")
def gemma_server(tmp_path_factory):
    """llama.cpp's server (xllamacpp) serving the embedded gemma-3-270m GGUF."""
    pytest.importorskip("xllamacpp", reason="make test installs it (sparselens[explain])")
    from sparselens.models.source import _embedded_gguf

    log = tmp_path_factory.mktemp("server") / "server.log"
    with LocalServer(_embedded_gguf("gemma-3-270m"), n_ctx=2048, log=log) as server:
        yield server


def test_real_server_answers_with_first_token_logprobs(gemma_server, tmp_path):
    client = CachedClient(gemma_server.client(concurrency=2), tmp_path)
    requests = [QUESTION, ChatRequest(messages=(("user", "Name a colour."),), max_tokens=8)]
    first = client.complete(requests)
    assert all(isinstance(r, ChatResponse) and r.text for r in first)
    assert len(first[0].first_token_logprobs) >= 2
    assert all(v <= 0 for v in first[0].first_token_logprobs.values())
    second = client.complete(requests)  # greedy and cached: same answers, no new requests
    assert [r.text for r in second] == [r.text for r in first] and client.hits == 2
