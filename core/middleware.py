import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from django.conf import settings
from django.http import FileResponse, HttpRequest, HttpResponseBase, StreamingHttpResponse

from .audit import actor_scope
from .context import current_request_id
from .db import replica_configured, unit_of_work
from .epochs import epochs_snapshot
from .logging import stream_in_log_context
from .redis_clients import redis_writes_batched
from .rls import NOBODY, current_db_principal, db_principal_scope


class RequestIdMiddleware:
    """Gives every request an id (honours a sane incoming X-Request-ID) and echoes it back."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if 0 < len(incoming) <= 64 and incoming.isascii() else uuid.uuid4().hex
        token = current_request_id.set(request_id)
        try:
            # Nobody acts until authentication says who (core.audit); nobody still acts after the request. The
            # database sees nothing private until then either (core.rls). Each cache epoch is read once (core.epochs),
            # and the counters the request bumps are written together at its end (core.redis_clients).
            with actor_scope(None), db_principal_scope(NOBODY), epochs_snapshot(), redis_writes_batched():
                response = self.get_response(request)
                if isinstance(response, StreamingHttpResponse) and not isinstance(response, FileResponse):
                    _stream_as(response, current_db_principal.get())
                if isinstance(response, StreamingHttpResponse):
                    stream_in_log_context(response)  # log lines of the body keep this request's tenant and id
        finally:
            current_request_id.reset(token)
        response["X-Request-ID"] = request_id
        return response


def _stream_as(response: StreamingHttpResponse, principal: str | None) -> None:
    """A streamed body is produced after the middleware returned: its queries still run as the request's principal."""
    content: Any = response.streaming_content
    if response.is_async:
        response.streaming_content = _async_stream_as(content, principal)
    else:
        response.streaming_content = _sync_stream_as(content, principal)


def _sync_stream_as(content: Iterator[bytes], principal: str | None) -> Iterator[bytes]:
    # Set and reset within each step: whoever iterates (a server thread, the test client) keeps its own state.
    iterator = iter(content)
    while True:
        token = current_db_principal.set(principal)
        try:
            chunk = next(iterator)
        except StopIteration:
            return
        finally:
            current_db_principal.reset(token)
        yield chunk


async def _async_stream_as(content: AsyncIterator[bytes], principal: str | None) -> AsyncIterator[bytes]:
    iterator = aiter(content)
    while True:
        token = current_db_principal.set(principal)
        try:
            chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        finally:
            current_db_principal.reset(token)
        yield chunk


REPLICA_PIN_COOKIE = "agentry_primary"


class ReplicaPinMiddleware:
    """Each request is a unit of work for the replica router (core.db): once it wrote, it reads from the primary.
    A response to a request that wrote pins its client to the primary for DATABASE_REPLICA_PIN_SECONDS (a cookie),
    while the replica replays the write."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if not replica_configured():
            return self.get_response(request)
        with unit_of_work(pinned=REPLICA_PIN_COOKIE in request.COOKIES) as unit:
            response = self.get_response(request)
        if unit.wrote:  # only a write starts the pin: reading while pinned does not extend it
            response.set_cookie(
                REPLICA_PIN_COOKIE,
                "1",
                max_age=settings.DATABASE_REPLICA_PIN_SECONDS,
                httponly=True,
                samesite="Lax",
                secure=settings.SESSION_COOKIE_SECURE,
            )
        return response
