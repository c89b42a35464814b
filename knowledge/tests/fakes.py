"""A loopback fake of a Cohere/Jina-style rerank endpoint, speaking the real wire format:

    POST /v1/rerank {"model", "query", "documents": [str], "top_n"}
    -> 200 {"results": [{"index", "relevance_score"}, ...]}   best first, at most top_n

Scores come from `scorer(query, document)`; `status` (an error answer), `delay` (seconds before answering) and
`body` (a raw answer) fake a failing server. Every request is recorded with its headers. Used by the tests and
bench/retrieval_quality.py (rerank latency); binds 127.0.0.1 on a free port.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def word_overlap(query: str, document: str) -> float:
    """A crude relevance: the share of the query's words found in the document."""
    words = set(query.lower().split())
    return len(words & set(document.lower().split())) / max(len(words), 1)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeRerankServer:
    def __init__(
        self,
        scorer: Callable[[str, str], float] = word_overlap,
        *,
        status: int = 200,
        delay: float = 0.0,
        body: bytes | None = None,
    ):
        self.scorer, self.status, self.delay, self.body = scorer, status, delay, body
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                payload = json.loads(self.rfile.read(length) or b"{}")
                with owner._lock:
                    owner.requests.append(
                        {"path": self.path, "body": payload, "headers": {k.lower(): v for k, v in self.headers.items()}}
                    )
                time.sleep(owner.delay)
                data = owner.body if owner.body is not None else json.dumps(owner.answer(payload)).encode()
                try:
                    self.send_response(owner.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self.status != 200:
            return {"message": "fake failure"}
        scores = [self.scorer(payload["query"], document) for document in payload["documents"]]
        ranked = sorted(enumerate(scores), key=lambda pair: -pair[1])[: int(payload.get("top_n") or len(scores))]
        return {"id": "fake", "results": [{"index": i, "relevance_score": s} for i, s in ranked]}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/rerank"

    def start(self) -> FakeRerankServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeRerankServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
