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
            stream = await self.client.chat.completions.create(**kwargs)
            async with stream:
                async for chunk in stream:
                    if chunk.usage:
                        yield Usage(
                            input_tokens=chunk.usage.prompt_tokens or 0,
                            output_tokens=chunk.usage.completion_tokens or 0,
                        )
                    for choice in chunk.choices:
                        delta = choice.delta
                        if delta is not None and delta.content:
                            yield TextDelta(delta.content)
                        # Tool calls arrive in pieces keyed by index: id and name first, then argument fragments.
                        for part in (delta.tool_calls or []) if delta is not None else []:
                            call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
                            if part.id:
                                call["id"] = part.id
                            if part.function is not None:
                                call["name"] += part.function.name or ""
                                call["arguments"] += part.function.arguments or ""
                        if choice.finish_reason:
                            finish = choice.finish_reason
        except openai.OpenAIError as exc:
            raise _translate_error(exc) from exc
        if not finish:
            # The connection ended without a finish_reason: the answer is cut off, not complete.
            raise ProviderError("The provider's stream ended before the answer was complete.")
        for index in sorted(calls):
            call = calls[index]
            yield ToolCall(id=call["id"] or f"call_{index}", name=call["name"], arguments=call["arguments"] or "{}")
        yield Finish(reason="tool_calls" if calls else ("length" if finish == "length" else "stop"))
