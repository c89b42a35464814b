"""The built-in offline provider: no network, no language model.

It answers extractively from the retrieved passages it is given: the sentences that best answer the question
(by meaning and by words, see extractive.py), each passage's extract followed by its citation marker [n], streamed
word by word, and it tells the run which passages it used (`Cited`) so only those are cited. With nothing relevant
it says so plainly, citing nothing, instead of inventing an answer. Given a `knowledge_search` tool and no passages
yet, it asks for the tool first, so the function-calling loop works offline too.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

from .base import ChatRequest, Cited, Finish, ProviderEvent, TextDelta, ToolCall, Usage
from .extractive import NOTHING_FOUND, extract_answer

__all__ = ["NOTHING_FOUND", "OfflineProvider"]


def _last_user_text(messages: list[dict]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content") or "")
    return ""


def _passages(request: ChatRequest) -> list[dict]:
    passages = list(request.context)
    # Tool results from knowledge_search count as passages too (tools agent type).
    for message in request.messages:
        if message.get("role") == "tool" and message.get("name") == "knowledge_search":
            try:
                passages.extend(json.loads(message.get("content") or "{}").get("results", []))
            except (ValueError, AttributeError):
                continue
    return passages


class OfflineProvider:
    name = "offline"

    def __init__(self, **_: object) -> None:
        pass

    async def stream(self, request: ChatRequest) -> AsyncIterator[ProviderEvent]:
        question = _last_user_text(request.messages)
        tool_names = {tool.name for tool in request.tools}
        already_searched = any(m.get("role") == "tool" for m in request.messages)
        if "knowledge_search" in tool_names and not already_searched and not request.context:
            yield ToolCall(
                id=f"call_{uuid.uuid4().hex[:12]}", name="knowledge_search", arguments=json.dumps({"query": question})
            )
            yield Usage(input_tokens=_count(request.messages), output_tokens=0)
            yield Finish(reason="tool_calls")
            return
        # Scoring encodes the candidate sentences with the embedding model: CPU work kept off the event loop.
        answer = await asyncio.to_thread(extract_answer, question, _passages(request))
        yield Cited(numbers=answer.cited)
        words = answer.text.split(" ")
        emitted = 0
        # Optional pacing ("typing speed") for demos and streaming tests; 0 = as fast as possible.
        delay = max(0.0, min(float(request.options.get("stream_delay_ms") or 0), 1000.0)) / 1000
        for i, word in enumerate(words):
            if delay and i:
                await asyncio.sleep(delay)
            if emitted >= request.max_tokens:
                yield Usage(input_tokens=_count(request.messages), output_tokens=emitted)
                yield Finish(reason="length")
                return
            yield TextDelta(word if i == 0 else " " + word)
            emitted += 1
        yield Usage(input_tokens=_count(request.messages), output_tokens=emitted)
        yield Finish(reason="stop")


def _count(messages: list[dict]) -> int:
    return sum(len(str(m.get("content") or "").split()) for m in messages)
