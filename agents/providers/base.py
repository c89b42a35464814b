"""The provider interface: one async generator of small events.

    provider = provider_for(kind, base_url=..., api_key=..., timeout=...)
    async for event in provider.stream(request):
        TextDelta | ToolCall | Usage | Finish | Cited

Messages are provider-neutral dicts:
    {"role": "system" | "user" | "assistant" | "tool", "content": str,
     "tool_calls": [{"id", "name", "arguments"}] (assistant), "tool_call_id": str (tool)}
Each provider translates them to its own wire format.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.errors import DomainError, ErrorCode
from core.ssrf import PinnedAsyncTransport, UnsafeURL


class ProviderError(DomainError):
    code = ErrorCode.PROVIDER_ERROR
    status = 502


class ProviderAuthError(ProviderError):
    code = ErrorCode.PROVIDER_AUTH


class ProviderUnsafeURL(ProviderError):
    code = ErrorCode.UNSAFE_URL


class ProviderTimeout(ProviderError):
    code = ErrorCode.PROVIDER_TIMEOUT
    status = 504


class ContextTooLong(DomainError):
    code = ErrorCode.CONTEXT_TOO_LONG
    status = 400


def _unsafe_url_cause(exc: BaseException) -> Any:
    while exc is not None:
        if isinstance(exc, UnsafeURL):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def sdk_client_kwargs(sdk: Any, *, base_url: str, api_key: str, timeout: float) -> dict[str, Any]:
    """How both official SDKs (passed as the `sdk` module; openai and anthropic share the client options) are
    built: no SDK retries (the runner decides), and an HTTP client on core.ssrf.PinnedAsyncTransport, which
    checks every request's address and reuses the process's TLS context."""

    return {
        "api_key": api_key or "none",
        "base_url": base_url or None,
        "timeout": timeout,
        "max_retries": 0,
        "http_client": sdk.DefaultAsyncHttpxClient(transport=PinnedAsyncTransport(), timeout=timeout),
    }


def translate_sdk_error(exc: Exception, sdk: Any, *, is_context_error: Callable[[str], bool]) -> Exception:
    """Map an exception of the official OpenAI or Anthropic SDK (same exception hierarchy, passed as
    the `sdk` module) to our error vocabulary. `is_context_error` recognises each vendor's wording
    for a prompt over the context window in a 400 answer."""
    if isinstance(exc, sdk.AuthenticationError | sdk.PermissionDeniedError):
        return ProviderAuthError("The provider rejected the API key.")
    if isinstance(exc, sdk.APITimeoutError):
        return ProviderTimeout("The provider did not answer in time.")
    if isinstance(exc, sdk.BadRequestError):
        text = str(exc)
        if is_context_error(text.lower()):
            return ContextTooLong("The conversation is longer than the model's context window.")
        return ProviderError(f"The provider refused the request: {text[:300]}")
    if isinstance(exc, sdk.APIConnectionError):
        unsafe = _unsafe_url_cause(exc)
        if unsafe is not None:  # core.ssrf.PinnedAsyncTransport refused the address at send time
            return ProviderUnsafeURL(f"The provider URL is not allowed: {unsafe.message}")
        return ProviderError("Could not reach the provider.")
    if isinstance(exc, sdk.APIStatusError):
        return ProviderError(f"The provider answered with HTTP {exc.status_code}.")
    return ProviderError(f"Provider failure: {exc.__class__.__name__}")


@dataclass
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    tools: list[ToolSpec] = field(default_factory=list)
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int = 1024
    # Retrieved passages for providers that answer from them directly (the offline provider).
    context: list[dict[str, Any]] = field(default_factory=list)
    # The agent's other sampling settings (provider-specific knobs such as the offline stream_delay_ms).
    options: dict[str, Any] = field(default_factory=dict)


def sampling_kwargs(request: ChatRequest) -> dict[str, float]:
    """The sampling settings both SDKs take under the same names (unset ones are left to the model)."""
    return {name: value for name in ("temperature", "top_p") if (value := getattr(request, name)) is not None}


@dataclass
class TextDelta:
    text: str


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # raw JSON text as the model produced it (may be malformed)


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class Finish:
    reason: str  # "stop", "tool_calls", "length"


@dataclass
class Cited:
    """The citation numbers [n] of the passages an answer is drawn from, when the provider knows them exactly
    (the offline provider). Without it the run reads the [n] markers in the answer's text."""

    numbers: list[int]


ProviderEvent = TextDelta | ToolCall | Usage | Finish | Cited


class ChatProvider(Protocol):
    name: str

    def stream(self, request: ChatRequest) -> AsyncIterator[ProviderEvent]: ...
