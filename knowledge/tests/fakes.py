"""A loopback fake of a Cohere/Jina-style rerank endpoint, speaking the real wire format:

    POST /v1/rerank {"model", "query", "documents": [str], "top_n"}
    -> 200 {"results": [{"index", "relevance_score"}, ...]}   best first, at most top_n

Scores come from `scorer(query, document)`; `status` (an error answer), `delay` (seconds before answering) and
`body` (a raw answer) fake a failing server. The server, the record of every request with its headers and the
start/stop plumbing are the agents tests' FakeServer's. Used by the tests and bench/reranking.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from agents.tests.fakes import FakeServer


def word_overlap(query: str, document: str) -> float:
    """A crude relevance: the share of the query's words found in the document."""
    words = set(query.lower().split())
    return len(words & set(document.lower().split())) / max(len(words), 1)


class FakeRerankServer(FakeServer):
    protocol = "rerank"

    def __init__(
        self,
        scorer: Callable[[str, str], float] = word_overlap,
        *,
        status: int = 200,
        delay: float = 0.0,
        body: bytes | None = None,
    ):
        super().__init__()
        self.scorer, self.status, self.delay, self.body = scorer, status, delay, body

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/rerank"

    def respond(self, handler, entry: dict[str, Any], body: dict[str, Any]) -> None:
        time.sleep(self.delay)
        data = self.body if self.body is not None else json.dumps(self.answer(body)).encode()
        handler.send_response(self.status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def answer(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self.status != 200:
            return {"message": "fake failure"}
        scores = [self.scorer(payload["query"], document) for document in payload["documents"]]
        ranked = sorted(enumerate(scores), key=lambda pair: -pair[1])[: int(payload.get("top_n") or len(scores))]
        return {"id": "fake", "results": [{"index": i, "relevance_score": s} for i, s in ranked]}
