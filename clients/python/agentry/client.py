"""The Agentry API client: one organisation's host, authenticated by an API key or by JWT (email and password).

    client = Agentry("https://acme.agentry.example", api_key="agk_...")
    answer = client.chat(agent_id, "How do I rotate an API key?")

Methods return the JSON bodies as they come, typed by `agentry.models`. Every non-2xx answer raises an
`AgentryError` subclass carrying the server's error code. With JWT, an access token the server calls expired or
invalid (`token_not_valid`) is refreshed once (the refresh token rotates) and the request sent again; when the
refresh token is refused too, the client signs in again if it was given the password.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import urlsplit

import httpx
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as websocket_connect

from .errors import AgentryError, AuthenticationError, IngestionFailedError, error_from_response
from .models import (
    Agent,
    AgentInputRequest,
    AgentList,
    ChatAccepted,
    ChatAnswer,
    ConversationList,
    ConversationMessages,
    Document,
    DocumentDeleted,
    DocumentIngest,
    DocumentList,
    KnowledgeBase,
    KnowledgeBaseInputRequest,
    KnowledgeBaseList,
    ModeEnum,
    Profile,
    RunCancel,
    RunEvent,
    RunEvents,
    SearchResult,
    TextSourceRequest,
    TokenPair,
)
from .streams import DEFAULT_MAX_RECONNECTS, TERMINAL, ChatSocket, EventStream

API = "/api/v1"
DEFAULT_TIMEOUT = 30.0
RUN_TIMEOUT = 300.0  # a whole answer (non-streaming chat) may take as long as the agent's run limit
EXPIRY_MARGIN_SECONDS = 10
FileSource = str | Path | tuple[str, bytes | IO[bytes]]


class Agentry:
    """A client of one organisation (its host is in `base_url`).

    Authenticate with `api_key`, or with `email` and `password` (a token pair is obtained on first use), or with an
    `access_token`/`refresh_token` pair kept from an earlier session (`client.access_token`, `client.refresh_token`).
    `connect_address` ("127.0.0.1:8000") sends the requests there while still naming base_url's host, like curl's
    --connect-to: for a host name that does not resolve from here (acme.localhost in development).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        email: str | None = None,
        password: str | None = None,
        access_token: str | None = None,
        refresh_token: str | None = None,
        connect_address: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        url = urlsplit(base_url.rstrip("/"))
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"base_url must be http(s)://host[:port], not {base_url!r}")
        if api_key is None and access_token is None and (email is None or password is None):
            raise ValueError("Give api_key, or email and password, or access_token (and refresh_token).")
        self.base_url = f"{url.scheme}://{url.netloc}"
        self.api_key = api_key
        self.email = email
        self.access_token = access_token
        self.refresh_token = refresh_token
        self.timeout = timeout
        self._password = password
        self._host = url.netloc
        self._address = connect_address
        headers = {"Accept": "application/json", "User-Agent": "agentry-python"}
        extensions: dict[str, Any] = {}
        if connect_address:
            headers["Host"] = url.netloc
            if url.scheme == "https":
                extensions["sni_hostname"] = url.hostname  # the certificate names the host, not the address
        self._extensions = extensions
        self._http = httpx.Client(
            base_url=f"{url.scheme}://{connect_address or url.netloc}", headers=headers, timeout=timeout
        )

    # --- Plumbing ------------------------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Agentry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _credentials(self) -> dict[str, str]:
        if self.api_key is not None:
            return {"Authorization": f"Api-Key {self.api_key}"}
        if self.access_token is None:
            self.login()
        return {"Authorization": f"Bearer {self.access_token}"}

    def _can_renew(self) -> bool:
        return self.api_key is None and (self.refresh_token is not None or self._password is not None)

    def _renew(self) -> None:
        """A fresh access token: from the refresh token, else by signing in again."""
        if self.refresh_token is not None:
            try:
                self.refresh()
                return
            except AuthenticationError:
                if self._password is None:
                    raise
        self.login()

    def _send(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        files: list[tuple[str, tuple[str, bytes]]] | None = None,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        authenticated: bool = True,
        timeout: float | httpx.Timeout | None = None,
    ) -> httpx.Response:
        """One request; raises the AgentryError of a non-2xx answer. A streamed response is left open."""
        for attempt in (1, 2):
            request = self._http.build_request(
                method,
                path,
                json=json_body,
                params=params,
                files=files,
                data=form,
                headers={**(self._credentials() if authenticated else {}), **(headers or {})},
                extensions=self._extensions,
                timeout=timeout if timeout is not None else self.timeout,
            )
            response = self._http.send(request, stream=stream)
            if response.is_success:
                return response
            response.read()
            response.close()
            error = error_from_response(response)
            if attempt == 1 and authenticated and error.code == "token_not_valid" and self._can_renew():
                self._renew()
                continue
            raise error
        raise AssertionError("unreachable")  # the loop returns or raises

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        return response.json() if response.content else None

    def request(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        """Any other operation of the API (/api/v1/schema/ lists them): the decoded JSON body, or None."""
        return self._json(method, path, json_body=json, params=params)

    # --- Authentication ------------------------------------------------------------------------------------

    def login(self) -> TokenPair:
        """Email and password -> a token pair for this organisation (called on first use; call it to sign in
        again)."""
        if self.email is None or self._password is None:
            raise AgentryError("not_authenticated", "No email and password to sign in with.")
        body = {"email": self.email, "password": self._password}
        pair = cast(TokenPair, self._json("POST", f"{API}/auth/token/", json_body=body, authenticated=False))
        self.access_token, self.refresh_token = pair["access"], pair["refresh"]
        return pair

    def refresh(self) -> TokenPair:
        """A new token pair from the refresh token (which the server then blacklists)."""
        if self.refresh_token is None:
            raise AgentryError("not_authenticated", "No refresh token.")
        body = {"refresh": self.refresh_token}
        pair = cast(TokenPair, self._json("POST", f"{API}/auth/token/refresh/", json_body=body, authenticated=False))
        self.access_token, self.refresh_token = pair["access"], pair["refresh"]
        return pair

    def logout(self) -> None:
        """End this JWT session: the refresh token and its access tokens stop working at once."""
        if self.refresh_token is not None:
            self._send("POST", f"{API}/auth/logout/", json_body={"refresh": self.refresh_token}, authenticated=False)
        self.access_token = self.refresh_token = None

    def me(self) -> Profile:
        return cast(Profile, self._json("GET", f"{API}/me/"))

    # --- Knowledge bases and documents ---------------------------------------------------------------------

    def list_knowledge_bases(self) -> KnowledgeBaseList:
        return cast(KnowledgeBaseList, self._json("GET", f"{API}/knowledge-bases/"))

    def create_knowledge_base(self, name: str, **fields: Any) -> KnowledgeBase:
        body = cast(KnowledgeBaseInputRequest, {"name": name, **fields})
        return cast(KnowledgeBase, self._json("POST", f"{API}/knowledge-bases/", json_body=body))

    def get_knowledge_base(self, kb_id: int) -> KnowledgeBase:
        return cast(KnowledgeBase, self._json("GET", f"{API}/knowledge-bases/{kb_id}/"))

    def update_knowledge_base(self, kb_id: int, **fields: Any) -> KnowledgeBase:
        body = cast(KnowledgeBaseInputRequest, fields)
        return cast(KnowledgeBase, self._json("PATCH", f"{API}/knowledge-bases/{kb_id}/", json_body=body))

    def delete_knowledge_base(self, kb_id: int) -> None:
        self._send("DELETE", f"{API}/knowledge-bases/{kb_id}/")

    def upload(
        self,
        kb_id: int,
        *,
        files: Iterable[FileSource] = (),
        texts: Sequence[TextSourceRequest] = (),
        urls: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
        note: str = "",
    ) -> DocumentIngest:
        """Add documents (files: paths or (name, bytes or binary file) pairs; texts: {"title", "text"}; urls),
        all in one new knowledge-base version. Each source succeeds or fails on its own: refused ones are in
        `errors`; when every source is refused, the first one's error is raised. Ingestion then runs on the
        server: `wait_until_ready` waits for it."""
        parts = [("files", _file_part(source)) for source in files]
        path = f"{API}/knowledge-bases/{kb_id}/documents/"
        if parts:
            if urls:
                raise ValueError("Send URLs in a call of their own: a multipart upload carries files and texts.")
            form = {"texts": json.dumps(list(texts))} if texts else {}
            if metadata:
                form["metadata"] = json.dumps(dict(metadata))
            if note:
                form["note"] = note
            return cast(DocumentIngest, self._json("POST", path, files=parts, form=form))
        body: dict[str, Any] = {"texts": list(texts), "urls": list(urls), "metadata": dict(metadata or {})}
        if note:
            body["note"] = note
        return cast(DocumentIngest, self._json("POST", path, json_body=body))

    def list_documents(self, kb_id: int, *, status: str | None = None) -> DocumentList:
        params = {"status": status} if status else None
        return cast(DocumentList, self._json("GET", f"{API}/knowledge-bases/{kb_id}/documents/", params=params))

    def get_document(self, kb_id: int, document_id: int) -> Document:
        return cast(Document, self._json("GET", f"{API}/knowledge-bases/{kb_id}/documents/{document_id}/"))

    def delete_document(self, kb_id: int, document_id: int) -> DocumentDeleted:
        path = f"{API}/knowledge-bases/{kb_id}/documents/{document_id}/"
        return cast(DocumentDeleted, self._json("DELETE", path))

    def wait_until_ready(
        self,
        kb_id: int,
        documents: DocumentIngest | Iterable[int],
        *,
        timeout: float = 300.0,
        poll_interval: float = 0.5,
    ) -> list[Document]:
        """Poll the documents (an `upload` result, or ids) until every one is ready, and return them.
        Raises IngestionFailedError when one fails, AgentryError(code="timeout") when `timeout` runs out."""
        if isinstance(documents, Mapping):
            ingest = cast(DocumentIngest, documents)
            ids = [d["id"] for d in ingest["documents"]] + [d["id"] for d in ingest["unchanged"]]
        else:
            ids = list(documents)
        deadline = time.monotonic() + timeout
        ready: dict[int, Document] = {}
        while True:
            for document_id in [i for i in ids if i not in ready]:
                document = self.get_document(kb_id, document_id)
                if document["status"] == "ready":
                    ready[document_id] = document
                elif document["status"] in ("failed", "deleted"):
                    raise IngestionFailedError(cast(dict[str, Any], document))
            if len(ready) == len(ids):
                return [ready[i] for i in ids]
            if time.monotonic() >= deadline:
                raise AgentryError("timeout", f"{len(ids) - len(ready)} document(s) not ready after {timeout} s.")
            time.sleep(poll_interval)

    def search(
        self,
        kb_id: int,
        query: str,
        *,
        top_k: int | None = None,
        mode: ModeEnum | None = None,
        document_ids: Sequence[int] | None = None,
        metadata: Mapping[str, Any] | None = None,
        version: int | None = None,
    ) -> SearchResult:
        """Hybrid (dense + lexical) search; `top_k` defaults to the server's (5)."""
        options = {"top_k": top_k, "mode": mode, "document_ids": document_ids, "metadata": metadata, "version": version}
        body = {"query": query, **{k: v for k, v in options.items() if v is not None}}
        return cast(SearchResult, self._json("POST", f"{API}/knowledge-bases/{kb_id}/search/", json_body=body))

    # --- Agents and chat -----------------------------------------------------------------------------------

    def list_agents(self) -> AgentList:
        return cast(AgentList, self._json("GET", f"{API}/agents/"))

    def create_agent(self, name: str, **fields: Any) -> Agent:
        body = cast(AgentInputRequest, {"name": name, **fields})
        return cast(Agent, self._json("POST", f"{API}/agents/", json_body=body))

    def get_agent(self, agent_id: int) -> Agent:
        return cast(Agent, self._json("GET", f"{API}/agents/{agent_id}/"))

    def update_agent(self, agent_id: int, **fields: Any) -> Agent:
        body = cast(AgentInputRequest, fields)
        return cast(Agent, self._json("PATCH", f"{API}/agents/{agent_id}/", json_body=body))

    def delete_agent(self, agent_id: int) -> None:
        self._send("DELETE", f"{API}/agents/{agent_id}/")

    def _chat_body(
        self, message: str, conversation_id: str | None, regenerate: int | None, **extra: Any
    ) -> dict[str, Any]:
        return {"message": message, "conversation_id": conversation_id, "regenerate": regenerate, **extra}

    def chat(
        self,
        agent_id: int,
        message: str,
        *,
        conversation_id: str | None = None,
        regenerate: int | None = None,
        timeout: float = RUN_TIMEOUT,
    ) -> ChatAnswer:
        """The whole answer once the run ends. A run that failed still answers: `status` says so and `error`
        carries the error body."""
        body = self._chat_body(message, conversation_id, regenerate)
        read_timeout = httpx.Timeout(self.timeout, read=timeout)
        path = f"{API}/agents/{agent_id}/chat/"
        return cast(ChatAnswer, self._json("POST", path, json_body=body, timeout=read_timeout))

    def chat_async(
        self, agent_id: int, message: str, *, conversation_id: str | None = None, regenerate: int | None = None
    ) -> ChatAccepted:
        """Start a run and return at once (202) with its id: read it with `run_events` or `stream_run`."""
        body = self._chat_body(message, conversation_id, regenerate, wait=False)
        return cast(ChatAccepted, self._json("POST", f"{API}/agents/{agent_id}/chat/", json_body=body))

    def chat_stream(
        self,
        agent_id: int,
        message: str,
        *,
        conversation_id: str | None = None,
        regenerate: int | None = None,
        max_reconnects: int = DEFAULT_MAX_RECONNECTS,
    ) -> EventStream:
        """Ask and iterate over the run's events (SSE) as they happen; a dropped connection is resumed from the
        last event received (Last-Event-ID), so each event arrives exactly once. Errors before the run starts
        (404, 429, ...) raise here; a run's own failure is an `error` event."""
        body = self._chat_body(message, conversation_id, regenerate)
        response = self._send(
            "POST",
            f"{API}/agents/{agent_id}/chat/",
            json_body=body,
            headers={"Accept": "text/event-stream"},
            stream=True,
        )
        run_id = response.headers["X-Run-Id"]
        return EventStream(response, run_id=run_id, reopen=self._run_sse_opener(run_id), max_reconnects=max_reconnects)

    def chat_websocket(
        self,
        agent_id: int,
        message: str,
        *,
        conversation_id: str | None = None,
        max_reconnects: int = DEFAULT_MAX_RECONNECTS,
    ) -> ChatSocket:
        """The same chat over /ws/agents/{id}/chat/: iterate for the run's events; `cancel()` stops the run. A
        dropped socket is reopened and the run resumed after the last event received."""
        first = {"type": "chat", "message": message, "conversation_id": conversation_id}
        return ChatSocket(lambda: self._websocket(agent_id), first, max_reconnects=max_reconnects)

    def _websocket(self, agent_id: int) -> ClientConnection:
        scheme = "wss" if self.base_url.startswith("https") else "ws"
        uri = f"{scheme}://{self._host}/ws/agents/{agent_id}/chat/"
        address: dict[str, Any] = {}
        if self._address:
            host, _, port = self._address.rpartition(":")
            address["address"] = (host.strip("[]"), int(port))
        if self.api_key is None and _expired(self.access_token) and self._can_renew():
            self._renew()  # a refused handshake says nothing about why: renew before, not after

        def open_socket() -> ClientConnection:
            connection: ClientConnection = websocket_connect(
                uri, additional_headers=self._credentials(), open_timeout=self.timeout, **address
            )
            return connection

        try:
            return open_socket()
        except InvalidStatus:
            if self.api_key is not None or not self._can_renew():
                raise
            self._renew()  # the token may have been revoked or rotated elsewhere: one more try with a fresh one
            return open_socket()

    # --- Runs and conversations ----------------------------------------------------------------------------

    def run_events(self, run_id: str, *, after: int = 0, wait: float | None = None) -> RunEvents:
        """One page of a run's events after `after` (long-polling: waits up to `wait` seconds, default the
        server's 25, for the first one). Pass `next_after` to the next call until `done`."""
        params: dict[str, Any] = {"after": after}
        if wait is not None:
            params["wait"] = wait
        read_timeout = httpx.Timeout(self.timeout, read=max(self.timeout, (wait or 25.0) + 10.0))
        path = f"{API}/runs/{run_id}/events/"
        return cast(RunEvents, self._json("GET", path, params=params, timeout=read_timeout))

    def wait_for_run(self, run_id: str, *, timeout: float = RUN_TIMEOUT) -> list[RunEvent]:
        """Every event of a run, once it has ended (long-polling)."""
        deadline = time.monotonic() + timeout
        events: list[RunEvent] = []
        after = 0
        while time.monotonic() < deadline:
            page = self.run_events(run_id, after=after, wait=min(25.0, max(deadline - time.monotonic(), 0.0)))
            events += page["events"]
            after = page["next_after"]
            if page["done"]:
                return events
        raise AgentryError("timeout", f"Run {run_id} did not end within {timeout} s.")

    def stream_run(self, run_id: str, *, after: int = 0, max_reconnects: int = DEFAULT_MAX_RECONNECTS) -> EventStream:
        """A run's events after `after` over SSE, resumed after a dropped connection like `chat_stream`."""
        opener = self._run_sse_opener(run_id)
        return EventStream(opener(after), run_id=run_id, reopen=opener, after=after, max_reconnects=max_reconnects)

    def _run_sse_opener(self, run_id: str) -> Callable[[int], httpx.Response]:
        def reopen(after: int) -> httpx.Response:
            headers = {"Accept": "text/event-stream", "Last-Event-ID": str(after)}
            return self._send("GET", f"{API}/runs/{run_id}/events/", headers=headers, stream=True)

        return reopen

    def cancel_run(self, run_id: str) -> RunCancel:
        """Stop a queued or streaming run; its stream then ends with message.end {"status": "cancelled"}.
        ConflictError when it has already ended."""
        return cast(RunCancel, self._json("POST", f"{API}/runs/{run_id}/cancel/"))

    def list_conversations(self, *, agent_id: int | None = None) -> ConversationList:
        params = {"agent": agent_id} if agent_id is not None else None
        return cast(ConversationList, self._json("GET", f"{API}/conversations/", params=params))

    def conversation_messages(self, conversation_id: str) -> ConversationMessages:
        return cast(ConversationMessages, self._json("GET", f"{API}/conversations/{conversation_id}/messages/"))


def answer_text(events: Iterable[RunEvent]) -> str:
    """The answer's text from a run's events (its `token` events, joined)."""
    return "".join(str(e["data"]["text"]) for e in events if e["type"] == "token")


def run_status(events: Sequence[RunEvent]) -> str | None:
    """complete, incomplete, cancelled or error: the message.end event's status (None before it)."""
    return next((str(e["data"].get("status")) for e in reversed(events) if e["type"] == TERMINAL), None)


def _file_part(source: FileSource) -> tuple[str, bytes]:
    if isinstance(source, tuple):
        name, content = source
        return name, content if isinstance(content, bytes) else content.read()
    path = Path(source)
    return path.name, path.read_bytes()


def _expired(token: str | None) -> bool:
    """Whether a JWT's `exp` has passed (read, not verified: the server verifies)."""
    if token is None or token.count(".") != 2:
        return True
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return True
    return float(claims.get("exp", 0)) < time.time() + EXPIRY_MARGIN_SECONDS
