"""ASGI plumbing that knows no app: Django's handler with one thread hop, and the Host of a WebSocket scope."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django_tenants.utils import remove_www


def host_from_scope(scope: dict) -> str:
    for name, value in scope.get("headers", []):
        if name == b"host":
            return remove_www(value.decode("latin1").split(":")[0].lower())
    return ""


class OneHopASGIHandler(ASGIHandler):
    """Django's ASGI handler with the middleware chain built synchronously and entered with one thread hop.

    Our middleware is synchronous (and MiddlewareMixin runs process_request/process_response through
    sync_to_async when the chain is async). Django's async chain therefore crosses threads several times per
    request: into the sync chain, back to the event loop for the view resolver, into a thread again for each
    process_view and for the view. Built for sync, a request takes one hop in and one out; async views still work
    (Django runs them with async_to_sync), and streaming responses are still sent by the event loop.
    """

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)
        if is_async:
            self._middleware_chain = sync_to_async(self._middleware_chain, thread_sensitive=True)
