"""A streamed response body keeps its request's log context (tenant, request id) under the real ASGI handler,
and an exception while streaming is logged there and ends the body instead of escaping to the server."""

from __future__ import annotations

import logging

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from django.http import StreamingHttpResponse
from django.urls import path

from conftest import host_of
from core.logging import ContextFilter

logger = logging.getLogger(__name__)


def failing_stream(request):
    async def body():
        logger.warning("first part sent")
        yield b"first "
        raise ValueError("the source broke mid-stream")

    return StreamingHttpResponse(body(), content_type="text/plain")


urlpatterns = [path("stream/", failing_stream)]


async def _get(app, host: str) -> tuple[int, dict[bytes, bytes], bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/stream/",
        "raw_path": b"/stream/",
        "query_string": b"",
        "headers": [(b"host", host.encode())],
        "server": (host, 80),
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
    await comm.wait(5)  # the application finished without raising
    return start["status"], dict(start["headers"]), body


@pytest.mark.django_db
def test_a_streamed_body_logs_under_its_own_tenant_and_request_id(settings, tenant_a, caplog):
    settings.ROOT_URLCONF = __name__  # a tenant host routes with ROOT_URLCONF; the product's middleware runs
    from core.asgi import OneHopASGIHandler

    caplog.handler.addFilter(ContextFilter())
    with caplog.at_level(logging.WARNING):
        status, headers, body = async_to_sync(_get)(OneHopASGIHandler(), host_of(tenant_a))
    assert (status, body) == (200, b"first ")
    lines = [r for r in caplog.records if r.name in (__name__, "core.logging")]
    assert [r.getMessage() for r in lines] == [
        "first part sent",
        "The response failed while streaming; its body ends here.",
    ]
    assert lines[1].exc_info[0] is ValueError
    request_id = headers[b"X-Request-ID"].decode()
    assert [(r.tenant, r.request_id) for r in lines] == [(tenant_a.schema_name, request_id)] * 2
