"""The built-in offline provider: no network, no weights.

It answers extractively from the retrieved passages it is given: the sentences that share the most terms with
the question, each followed by its citation marker [n], streamed word by word. With nothing relevant it says so
plainly instead of inventing an answer. Given a `knowledge_search` tool and no passages yet, it asks for the tool
first, so the function-calling loop works offline too.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator

from .base import ChatRequest, Finish, ProviderEvent, TextDelta, ToolCall, Usage

NOTHING_FOUND = "I could not find anything relevant to your question in the knowledge base."
_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_STOP = frozenset(
    "a an and are as at be but by can do does for from has have how i in is it its me my of on or our so that the "
    "their them then there these they this to was we were what when where which who why will with you your".split()
)


def _terms(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1}


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


def extractive_answer(question: str, passages: list[dict], *, max_sentences: int = 3) -> str:
    wanted = _terms(question)
    scored: list[tuple[float, int, int, str]] = []
    for index, passage in enumerate(passages):
        marker = passage.get("n", index + 1)
        for order, sentence in enumerate(_SENTENCE.split(str(passage.get("text", "")).strip())):
            overlap = wanted & _terms(sentence)
            if sentence and overlap:
                scored.append((len(overlap) / (len(wanted) or 1), -index * 1000 - order, marker, sentence.strip()))
    if not scored:
        return NOTHING_FOUND
    best = sorted(scored, reverse=True)[:max_sentences]
    best.sort(key=lambda item: -item[1])  # back to document order
    return " ".join(f"{sentence} [{marker}]" for _, _, marker, sentence in best)


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
        answer = extractive_answer(question, _passages(request))
        words = answer.split(" ")
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
