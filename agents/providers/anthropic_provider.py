"""Anthropic Messages API via the official SDK (streaming, tool use)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anthropic

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


def to_anthropic(messages: list[dict]) -> tuple[str, list[dict]]:
    """Split out the system prompt; tool calls become tool_use blocks, tool results user tool_result blocks."""
    system_parts: list[str] = []
    out: list[dict] = []
    for m in messages:
        role = m["role"]
        if role == "system":
            system_parts.append(m.get("content") or "")
        elif role == "tool":
            block = {"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": m.get("content") or ""}
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)  # several results answer one assistant turn
            else:
                out.append({"role": "user", "content": [block]})
        elif role == "assistant" and m.get("tool_calls"):
            blocks: list[dict] = [{"type": "text", "text": m["content"]}] if m.get("content") else []
            for c in m["tool_calls"]:
                try:
                    arguments = json.loads(c["arguments"] or "{}")
                except ValueError:
                    arguments = {}
                blocks.append({"type": "tool_use", "id": c["id"], "name": c["name"], "input": arguments})
            out.append({"role": "assistant", "content": blocks})
        else:
            out.append({"role": role, "content": m.get("content") or ""})
    return "\n\n".join(p for p in system_parts if p), out


def _translate_error(exc: Exception) -> Exception:
    return translate_sdk_error(exc, anthropic, is_context_error=lambda text: "too long" in text or "context" in text)


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, *, base_url: str = "", api_key: str = "", timeout: float = 60.0) -> None:
        self.client = anthropic.AsyncAnthropic(
            **sdk_client_kwargs(anthropic, base_url=base_url, api_key=api_key, timeout=timeout)
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[ProviderEvent]:
        system, messages = to_anthropic(request.messages)
        kwargs: dict = {"model": request.model, "messages": messages, "max_tokens": request.max_tokens, "stream": True}
        if system:
            kwargs["system"] = system
        sampling = sampling_kwargs(request)
        if sampling:
            # anthropic SDK 1.0 dropped temperature/top_p from create(); the API still takes them on models that
            # allow sampling settings, so they go in the body as before (only when the agent sets them).
            kwargs["extra_body"] = sampling
        if request.tools:
            kwargs["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in request.tools
            ]
        blocks: dict[int, dict] = {}
        usage = Usage()
        stop = "end_turn"
        finished = False
        try:
            stream = await self.client.messages.create(**kwargs)
            async for event in stream:
                kind = event.type
                if kind == "message_start":
                    usage.input_tokens = event.message.usage.input_tokens or 0
                    usage.output_tokens = event.message.usage.output_tokens or 0
                elif kind == "content_block_start":
                    block = event.content_block
                    if block.type == "tool_use":
                        blocks[event.index] = {"id": block.id, "name": block.name, "json": ""}
                elif kind == "content_block_delta":
                    delta = event.delta
                    if delta.type == "text_delta":
                        yield TextDelta(delta.text)
                    elif delta.type == "input_json_delta" and event.index in blocks:
                        blocks[event.index]["json"] += delta.partial_json
                elif kind == "message_delta":
                    if event.usage is not None and event.usage.output_tokens is not None:
                        usage.output_tokens = event.usage.output_tokens
                    if event.delta.stop_reason:
                        stop = event.delta.stop_reason
                elif kind == "message_stop":
                    finished = True
        except anthropic.AnthropicError as exc:
            raise _translate_error(exc) from exc
        if not finished:
            # The connection ended without message_stop: the answer is cut off, not complete.
            raise ProviderError("The provider's stream ended before the answer was complete.")
        yield usage
        for index in sorted(blocks):
            block = blocks[index]
            yield ToolCall(id=block["id"], name=block["name"], arguments=block["json"] or "{}")
        yield Finish(reason="tool_calls" if blocks else ("length" if stop == "max_tokens" else "stop"))
