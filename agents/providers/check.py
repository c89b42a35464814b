"""Does a model connection work? One tiny completion through the very provider class the agents use.

A one-token chat completion (rather than the models list) checks everything a chat needs at once: the address
(through the SSRF-checked transport), the key, and that the model name exists on that server. Every
OpenAI-compatible server (Ollama, vLLM, LM Studio, llama.cpp, OpenAI) and Anthropic answer it the same way.
"""

from __future__ import annotations

import time
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from core.errors import DomainError
from core.ssrf import UnsafeURL, check_url

from .base import ChatRequest, Finish, TextDelta

CHECK_TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True)
class ConnectionCheck:
    ok: bool
    message: str
    latency_ms: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "message": self.message, "latency_ms": self.latency_ms}


async def provider_connection_check(
    *, provider_class: type, base_url: str, api_key: str, model: str, timeout: float = CHECK_TIMEOUT_SECONDS
) -> ConnectionCheck:
    """Ask `model` for one token; ok with the time to its first answer, or the provider's error in our words."""
    if not model:
        return ConnectionCheck(False, "Give a model name to test (for example llama3.1 or gpt-4o-mini).")
    if base_url:
        try:
            check_url(base_url, field="base_url")
        except UnsafeURL as exc:
            return ConnectionCheck(False, f"The provider URL is not allowed: {exc.message}")
    provider = provider_class(base_url=base_url, api_key=api_key, timeout=min(timeout, CHECK_TIMEOUT_SECONDS))
    request = ChatRequest(model=model, messages=[{"role": "user", "content": "Reply with OK."}], max_tokens=1)
    started = time.monotonic()
    try:
        async with aclosing(provider.stream(request)) as events:
            async for event in events:
                if isinstance(event, TextDelta | Finish):
                    break
    except DomainError as exc:
        return ConnectionCheck(False, exc.message)
    latency_ms = int((time.monotonic() - started) * 1000)
    return ConnectionCheck(True, f"Connected: {model} answered in {latency_ms} ms.", latency_ms)
