"""Loopback fake servers speaking the real wire protocols (OpenAI chat.completions SSE, Anthropic messages SSE)
plus a generic HTTP target for tools. Used by tests and bench/chat_streaming.py; they bind 127.0.0.1 on a free
port and record every request they receive.

A script entry (one per request, the last one repeats):
    {"text": ["Hel", "lo"], "tool_calls": [{"id", "name", "arguments"}], "delay": 0.0 (per token),
     "status": 401, "hang": 5.0 (before answering), "disconnect_after": 2 (tokens, then drop the connection)}
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeServer:
    protocol = ""

    def __init__(self, script: list[dict[str, Any]] | None = None):
        self.script = list(script or [{"text": ["Hello", " world"]}])
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with owner._lock:
                    owner.requests.append(
                        {"path": self.path, "body": body, "headers": {k.lower(): v for k, v in self.headers.items()}}
                    )
                    index = len(owner.requests) - 1
                    entry = owner.script[min(index, len(owner.script) - 1)]
                try:
                    owner.respond(self, entry, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST  # noqa: N815

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- helpers for handlers
    @staticmethod
    def _json(handler, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    @staticmethod
    def _sse_start(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True

    def respond(self, handler, entry: dict[str, Any], body: dict[str, Any]) -> None:
        raise NotImplementedError


class FakeOpenAI(FakeServer):
    """POST /v1/chat/completions with stream=true -> chat.completion.chunk SSE, tool_calls deltas included."""

    protocol = "openai"

    def respond(self, handler, entry, body):
        if entry.get("hang"):
            time.sleep(entry["hang"])
        if entry.get("status"):
            code = "invalid_api_key" if entry["status"] == 401 else "context_length_exceeded"
            message = (
                "Incorrect API key provided."
                if entry["status"] == 401
                else "This model's maximum context length is 8192 tokens."
            )
            self._json(
                handler,
                entry["status"],
                {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}},
            )
            return
        self._sse_start(handler)

        def chunk(delta: dict, finish=None, usage=None, choices=True):
            payload = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": body.get("model", "fake"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else [],
            }
            if usage is not None:
                payload["usage"] = usage
            handler.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
            handler.wfile.flush()

        chunk({"role": "assistant", "content": ""})
        for n, token in enumerate(entry.get("text", [])):
            if entry.get("disconnect_after") is not None and n >= entry["disconnect_after"]:
                handler.wfile.flush()
                handler.connection.shutdown(2)
                return
            if entry.get("delay"):
                time.sleep(entry["delay"])
            chunk({"content": token})
        for index, call in enumerate(entry.get("tool_calls", [])):
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["name"], "arguments": ""},
                        }
                    ]
                }
            )
            arguments = call["arguments"]
            half = len(arguments) // 2  # arguments arrive in fragments, as from the real API
            for piece in (arguments[:half], arguments[half:]):
                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        chunk({}, finish="tool_calls" if entry.get("tool_calls") else "stop")
        chunk(
            {},
            usage={
                "prompt_tokens": 11,
                "completion_tokens": len(entry.get("text", [])),
                "total_tokens": 11 + len(entry.get("text", [])),
            },
            choices=False,
        )
        handler.wfile.write(b"data: [DONE]\n\n")
        handler.wfile.flush()


class FakeAnthropic(FakeServer):
    """POST /v1/messages with stream=true -> Anthropic message SSE events, tool_use input_json_delta included."""

    protocol = "anthropic"

    def respond(self, handler, entry, body):
        if entry.get("hang"):
            time.sleep(entry["hang"])
        if entry.get("status"):
            kind = "authentication_error" if entry["status"] == 401 else "invalid_request_error"
            message = "invalid x-api-key" if entry["status"] == 401 else "prompt is too long: 300000 tokens > 200000"
            self._json(handler, entry["status"], {"type": "error", "error": {"type": kind, "message": message}})
            return
        self._sse_start(handler)

        def event(name: str, payload: dict):
            handler.wfile.write(f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode())
            handler.wfile.flush()

        event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": body.get("model"),
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 13, "output_tokens": 1},
                },
            },
        )
        index = 0
        if entry.get("text"):
            event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            )
            event("ping", {"type": "ping"})
            for n, token in enumerate(entry["text"]):
                if entry.get("disconnect_after") is not None and n >= entry["disconnect_after"]:
                    handler.connection.shutdown(2)
                    return
                if entry.get("delay"):
                    time.sleep(entry["delay"])
                event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": token}},
                )
            event("content_block_stop", {"type": "content_block_stop", "index": 0})
            index = 1
        for call in entry.get("tool_calls", []):
            event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "tool_use", "id": call["id"], "name": call["name"], "input": {}},
                },
            )
            arguments = call["arguments"]
            half = len(arguments) // 2
            for piece in (arguments[:half], arguments[half:]):
                event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                )
            event("content_block_stop", {"type": "content_block_stop", "index": index})
            index += 1
        event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use" if entry.get("tool_calls") else "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": len(entry.get("text", [])) + 1},
            },
        )
        event("message_stop", {"type": "message_stop"})


class FakeHTTPTarget(FakeServer):
    """A plain HTTP endpoint for tool tests: {"json": {...}} | {"size": bytes} | {"hang": s} | {"status": n}."""

    def respond(self, handler, entry, body):
        if entry.get("hang"):
            time.sleep(entry["hang"])
        if entry.get("size"):
            handler.send_response(200)
            handler.send_header("Content-Type", "text/plain")
            handler.send_header("Content-Length", str(entry["size"]))
            handler.end_headers()
            block = b"x" * 65536
            remaining = entry["size"]
            while remaining > 0:
                handler.wfile.write(block[: min(remaining, len(block))])
                remaining -= len(block)
            return
        self._json(handler, entry.get("status", 200), entry.get("json", {"ok": True, "echo": body}))
