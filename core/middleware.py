import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase

from .audit import actor_scope
from .context import current_request_id


class RequestIdMiddleware:
    """Gives every request an id (honours a sane incoming X-Request-ID) and echoes it back."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if 0 < len(incoming) <= 64 and incoming.isascii() else uuid.uuid4().hex
        token = current_request_id.set(request_id)
        try:
            # Nobody acts until authentication says who (core.audit); nobody still acts after the request.
            with actor_scope(None):
                response = self.get_response(request)
        finally:
            current_request_id.reset(token)
        response["X-Request-ID"] = request_id
        return response
