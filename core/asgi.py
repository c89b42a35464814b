"""ASGI plumbing that knows no app: Django's handler with one thread hop, and the Host of a WebSocket scope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, cast

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase
from django_tenants.utils import remove_www


def host_from_scope(scope: Mapping[str, Any]) -> str:
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers", [])
    for name, value in headers:
        if name == b"host":
            host: str = remove_www(value.decode("latin1").split(":")[0].lower())
            return host
    return ""


class OneHopASGIHandler(ASGIHandler):
    """Django's ASGI handler with the middleware chain built synchronously and entered with one thread hop.

    Our middleware is synchronous (and MiddlewareMixin runs process_request/process_response through
    sync_to_async when the chain is async). Django's async chain therefore crosses threads several times per
    request: into the sync chain, back to the event loop for the view resolver, into a thread again for each
    process_view and for the view. Built for sync, a request takes one hop in and one out; async views still work
    (Django runs them with async_to_sync), and streaming responses are still sent by the event loop.
    """

    # Set by BaseHandler.load_middleware; django-stubs does not declare it.
    _middleware_chain: Callable[[HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]]

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)
        if is_async:
            # cast: the chain was just built with is_async=False, so it answers synchronously.
            chain = cast(Callable[[HttpRequest], HttpResponseBase], self._middleware_chain)
            self._middleware_chain = sync_to_async(chain, thread_sensitive=True)
