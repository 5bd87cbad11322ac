"""Language-model clients for explaining and scoring latents: one protocol, an
OpenAI-compatible HTTP backend, an in-process transformers backend, an on-disk cache, and a
local llama.cpp server for GGUF models."""

from sparselens.interpretation.llm.base import (
    ChatRequest,
    ChatResponse,
    LLMClient,
    LLMConfigError,
    LLMError,
)
from sparselens.interpretation.llm.cache import CachedClient

__all__ = ["CachedClient", "ChatRequest", "ChatResponse", "LLMClient", "LLMConfigError",
           "LLMError"]
