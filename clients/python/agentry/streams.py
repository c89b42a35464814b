"""A run's events as they happen: over SSE (resumed with Last-Event-ID) or a WebSocket (resumed with "resume").

Both iterators yield the same `RunEvent` dicts, each exactly once and in `seq` order, ending with message.end. A
dropped connection is not an error: the run goes on in the server's worker and its events are kept, so the iterator
reconnects and asks for the events after the last one it yielded. Only `max_reconnects` failures in a row without
a new event end the iteration with `AgentryError(code="connection_lost")`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import httpx
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection

from .errors import AgentryError, error_from_body
from .models import RunEvent

TERMINAL = "message.end"
DEFAULT_MAX_RECONNECTS = 5


def _backoff(failures: int) -> None:
    time.sleep(min(0.2 * 2 ** (failures - 1), 5.0))


def sse_events(response: httpx.Response) -> Iterator[RunEvent]:
    """The events of an SSE response (`data:` lines; `id:`/`event:` repeat the event's seq and type; `:` lines
    are keep-alive comments)."""
    data: list[str] = []
    for line in response.iter_lines():
        if not line:
            if data:
                yield cast(RunEvent, json.loads("\n".join(data)))
                data = []
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)


class EventStream:
    """A run's events over SSE. `run_id` and `conversation_id` are known before the first event; `last_event_id`
    is the seq of the last event yielded, `reconnects` how many times the stream was resumed."""

    def __init__(
        self,
        response: httpx.Response,
        *,
        run_id: str,
        reopen: Callable[[int], httpx.Response],
        after: int = 0,
        max_reconnects: int = DEFAULT_MAX_RECONNECTS,
    ) -> None:
        self.run_id = run_id
        self.conversation_id: str | None = response.headers.get("X-Conversation-Id")
        self.last_event_id = after
        self.reconnects = 0
        self.response: httpx.Response | None = response  # the connection being read (None between two)
        self._reopen = reopen
        self._max_reconnects = max_reconnects

    def __iter__(self) -> Iterator[RunEvent]:
        failures = 0
        while True:
            try:
                if self.response is None:
                    self.response = self._reopen(self.last_event_id)
                for event in sse_events(self.response):
                    if event["seq"] <= self.last_event_id:
                        continue  # already yielded before the connection dropped
                    self.last_event_id = event["seq"]
                    failures = 0
                    yield event
                    if event["type"] == TERMINAL:
                        return
                lost = "the server ended the stream before message.end"
            except httpx.TransportError as exc:  # reset, incomplete chunked body, read timeout, refused
                lost = f"{type(exc).__name__}: {exc}"
            finally:
                self.close()
            failures += 1
            if failures > self._max_reconnects:
                raise AgentryError("connection_lost", f"Run {self.run_id}: {lost}")
            self.reconnects += 1
            _backoff(failures)

    def close(self) -> None:
        """Drop the connection (the run goes on; iterating again resumes after `last_event_id`)."""
        if self.response is not None:
            self.response.close()
            self.response = None

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ChatSocket:
    """One chat turn over /ws/agents/{id}/chat/. `accepted` is the server's run.accepted frame once it arrived
    (`run_id`, `conversation_id`, `message_id`); errors before a run exists raise `AgentryError`."""

    def __init__(
        self,
        connect: Callable[[], ClientConnection],
        first: dict[str, Any],
        *,
        max_reconnects: int = DEFAULT_MAX_RECONNECTS,
        idle_timeout: float = 60.0,
    ) -> None:
        self.accepted: dict[str, Any] | None = None
        self.run_id: str | None = first.get("run_id")
        self.last_event_id = int(first.get("after", 0))
        self.reconnects = 0
        self.connection: ClientConnection | None = None
        self._connect = connect
        self._first = first
        self._max_reconnects = max_reconnects
        self._idle_timeout = idle_timeout

    def __iter__(self) -> Iterator[RunEvent]:
        failures = 0
        while True:
            try:
                with self._connect() as connection:  # entered: a plain connect() is deprecated in websockets 17
                    self.connection = connection
                    opening = self._first if self.run_id is None else self._resume()
                    connection.send(json.dumps(opening))
                    while True:
                        frame = json.loads(connection.recv(timeout=self._idle_timeout))
                        if frame["type"] == "run.accepted":
                            self.accepted, self.run_id = frame, frame["run_id"]
                            continue
                        if frame["type"] == "error" and not frame.get("seq"):
                            raise error_from_body(frame["data"])
                        if frame["seq"] <= self.last_event_id:
                            continue
                        self.last_event_id = frame["seq"]
                        failures = 0
                        yield cast(RunEvent, frame)
                        if frame["type"] == TERMINAL:
                            return
            except InvalidStatus as exc:
                status = exc.response.status_code
                detail = f"The handshake was refused (HTTP {status})."
                raise AgentryError("websocket_refused", detail, status=status) from exc
            except (ConnectionClosed, TimeoutError, OSError) as exc:
                lost = f"{type(exc).__name__}: {exc}"
            finally:
                self.close()
            if self.run_id is None:  # nothing to resume: the run may not exist
                raise AgentryError("connection_lost", f"The connection dropped before the run started ({lost}).")
            failures += 1
            if failures > self._max_reconnects:
                raise AgentryError("connection_lost", f"Run {self.run_id}: {lost}")
            self.reconnects += 1
            _backoff(failures)

    def _resume(self) -> dict[str, Any]:
        return {"type": "resume", "run_id": self.run_id, "after": self.last_event_id}

    def cancel(self) -> None:
        """Ask the server to stop the run; the stream then ends with message.end {"status": "cancelled"}."""
        if self.connection is None:
            raise AgentryError("connection_lost", "Not connected: cancel the run with Agentry.cancel_run(run_id).")
        self.connection.send(json.dumps({"type": "cancel", "run_id": self.run_id}))

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def __enter__(self) -> ChatSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
