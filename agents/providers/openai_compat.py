"""OpenAI-compatible chat completions (OpenAI, Azure, Ollama, vLLM, llama.cpp, LM Studio) via the official SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai

from .base import (
    ChatRequest,
    Finish,
    ProviderError,
    ProviderEvent,
    TextDelta,
    ToolCall,
    Usage,
    sampling_kwargs,
    sdk_client_kwargs,
    translate_sdk_error,
)


def to_openai_messages(messages: list[dict]) -> list[dict]:
    out: list[dict] = []
    for m in messages:
        role = m["role"]
        if role == "tool":
            out.append({"role": "tool", "tool_call_id": m["tool_call_id"], "content": m.get("content") or ""})
        elif role == "assistant" and m.get("tool_calls"):
            out.append(
                {
                    "role": "assistant",
                    "content": m.get("content") or None,
                    "tool_calls": [
                        {
                            "id": c["id"],
                            "type": "function",
                            "function": {"name": c["name"], "arguments": c["arguments"]},
                        }
                        for c in m["tool_calls"]
                    ],
                }
            )
        else:
            out.append({"role": role, "content": m.get("content") or ""})
    return out


def _translate_error(exc: Exception) -> Exception:
    return translate_sdk_error(
        exc, openai, is_context_error=lambda text: "context" in text and ("length" in text or "maximum" in text)
    )


class OpenAICompatProvider:
    name = "openai"

    def __init__(self, *, base_url: str = "", api_key: str = "", timeout: float = 60.0) -> None:
        self.client = openai.AsyncOpenAI(
            **sdk_client_kwargs(openai, base_url=base_url, api_key=api_key, timeout=timeout)
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[ProviderEvent]:
        kwargs: dict = {
            "model": request.model,
            "messages": to_openai_messages(request.messages),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": request.max_tokens,
            **sampling_kwargs(request),
        }
        if request.tools:
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in request.tools
            ]
        calls: dict[int, dict] = {}
        finish = ""
        try:
            async with self.client.chat.completions.with_streaming_response.create(**kwargs) as response:
                # Chunks as their decoded JSON: building the SDK's pydantic model of every chunk cost the worker more
                # CPU than everything else a streamed token does. The SDK still decodes the SSE, raises an error
                # sent mid-stream as APIError and turns timeouts and dropped connections into its own errors.
                stream = await response.parse(to=openai.AsyncStream[object])
                async for chunk in stream:
                    if not isinstance(chunk, dict):
                        continue
                    usage = chunk.get("usage")
                    if usage:
                        yield Usage(
                            input_tokens=usage.get("prompt_tokens") or 0,
                            output_tokens=usage.get("completion_tokens") or 0,
                        )
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta") or {}
                        if delta.get("content"):
                            yield TextDelta(delta["content"])
                        # Tool calls arrive in pieces keyed by index: id and name first, then argument fragments.
                        for part in delta.get("tool_calls") or ():
                            call = calls.setdefault(part.get("index") or 0, {"id": "", "name": "", "arguments": ""})
                            if part.get("id"):
                                call["id"] = part["id"]
                            function = part.get("function") or {}
                            call["name"] += function.get("name") or ""
                            call["arguments"] += function.get("arguments") or ""
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
        except openai.OpenAIError as exc:
            raise _translate_error(exc) from exc
        if not finish:
            # The connection ended without a finish_reason: the answer is cut off, not complete.
            raise ProviderError("The provider's stream ended before the answer was complete.")
        for index in sorted(calls):
            call = calls[index]
            yield ToolCall(id=call["id"] or f"call_{index}", name=call["name"], arguments=call["arguments"] or "{}")
        yield Finish(reason="tool_calls" if calls else ("length" if finish == "length" else "stop"))
