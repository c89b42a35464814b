"""The web process's Django handler (core.asgi.OneHopASGIHandler): one thread hop per request, same behaviour."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import AsyncToSync
from asgiref.testing import ApplicationCommunicator
from django.http import HttpResponse, StreamingHttpResponse
from django.urls import path

SEEN: dict[str, int] = {}


def recording_middleware(get_response):
    # Django's async chain hands a sync middleware async_to_sync(view resolver): back to the event loop, then
    # into a thread again for the view.
    SEEN["view_behind_a_hop"] = isinstance(get_response, AsyncToSync)

    def middleware(request):
        SEEN["middleware"] = threading.get_ident()
        return get_response(request)

    return middleware


def sync_view(request):
    SEEN["view"] = threading.get_ident()
    return HttpResponse("sync")


async def async_view(request):
    return HttpResponse("async")


def streaming_view(request):
    async def body():
        for part in (b"one ", b"two"):
            yield part

    return StreamingHttpResponse(body(), content_type="text/plain")


urlpatterns = [path("sync/", sync_view), path("async/", async_view), path("stream/", streaming_view)]


async def _get(app, path_: str) -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path_,
        "raw_path": path_.encode(),
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1234),
    }
    comm = ApplicationCommunicator(app, scope)
    await comm.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await comm.receive_output(5)
    body = b""
    while True:
        message = await comm.receive_output(5)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    return start["status"], body


@pytest.fixture
def handler(settings):
    settings.ROOT_URLCONF = __name__
    settings.MIDDLEWARE = [f"{__name__}.recording_middleware"]
    settings.ALLOWED_HOSTS = ["testserver"]
    from core.asgi import OneHopASGIHandler

    SEEN.clear()
    return OneHopASGIHandler  # built inside each test, after the settings above


def test_middleware_and_view_run_in_one_thread_off_the_event_loop(handler):
    assert asyncio.run(_get(handler(), "/sync/")) == (200, b"sync")
    assert SEEN["view_behind_a_hop"] is False
    assert SEEN["middleware"] == SEEN["view"] != threading.get_ident()


def test_async_views_and_async_streaming_responses_still_work(handler):
    app = handler()
    assert asyncio.run(_get(app, "/async/")) == (200, b"async")
    assert asyncio.run(_get(app, "/stream/")) == (200, b"one two")
