"""Exceptions carrying the server's error body: branch on `.code` (stable, listed in the server's docs/errors.md).

Every error the server reports, over HTTP, SSE or WebSocket, is `{"code", "detail", ...context}`; the exception
keeps all of it in `.body`. The subclass follows the HTTP status, so `except NotFoundError` reads as it should.
"""

from __future__ import annotations

from typing import Any

import httpx


class AgentryError(Exception):
    """An error the server (or, for the codes below, the client) reported.

    `code`: the server's error code (`not_found`, `scope_required`, `rate_limited`, ...), or one of the client's own:
    `unexpected_response` (a body that is not the error shape), `connection_lost` (a stream could not be resumed),
    `timeout` (a wait ran out), `document_failed` (ingestion failed), `websocket_refused` (the handshake was refused).
    """

    def __init__(self, code: str, detail: str, *, status: int | None = None, body: dict[str, Any] | None = None):
        super().__init__(f"{code}: {detail}" if status is None else f"{status} {code}: {detail}")
        self.code = code
        self.detail = detail
        self.status = status
        self.body: dict[str, Any] = body if body is not None else {"code": code, "detail": detail}

    @property
    def field(self) -> str | None:
        """The input field at fault, when the server names one."""
        field = self.body.get("field")
        return field if isinstance(field, str) else None


class BadRequestError(AgentryError):
    """400: the input is invalid (`fields` has every field's messages)."""


class AuthenticationError(AgentryError):
    """401: missing, expired, revoked or wrong credentials."""


class QuotaExceededError(AgentryError):
    """402: the organisation's plan quota is used up."""


class PermissionDeniedError(AgentryError):
    """403: authenticated, but not allowed (a read-only member, an API key without the scope, ...)."""


class NotFoundError(AgentryError):
    """404: no such object, or not one you may see."""


class ConflictError(AgentryError):
    """409: the object's state forbids it (a run that already finished, ...)."""


class RetryableError(AgentryError):
    """An error worth retrying after `retry_after` seconds (429, 503)."""

    @property
    def retry_after(self) -> float | None:
        value = self.body.get("retry_after")
        return float(value) if isinstance(value, int | float) else None


class RateLimitError(RetryableError):
    """429: too many requests or runs at once (`rate_limited`, `concurrency_limited`, `throttled`)."""


class ServiceUnavailableError(RetryableError):
    """503: the server is overloaded or a dependency is down (`overloaded`, `database_unavailable`, ...)."""


class IngestionFailedError(AgentryError):
    """A document ended in status "failed" while waiting for it to be ready; `document` is its last state."""

    def __init__(self, document: dict[str, Any]):
        super().__init__("document_failed", f"{document.get('title')}: {document.get('error') or 'ingestion failed'}")
        self.document = document


_BY_STATUS: dict[int, type[AgentryError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: QuotaExceededError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


# Where no HTTP status comes with the body (a WebSocket error frame, a run's error event): the status the code
# has over HTTP (the server's docs/errors.md), for the exception's class only.
_STATUS_OF_CODE = {
    "invalid": 400,
    "parse_error": 400,
    "not_found": 404,
    "conflict": 409,
    "forbidden": 403,
    "permission_denied": 403,
    "scope_required": 403,
    "readonly": 403,
    "quota_exceeded": 402,
    "throttled": 429,
    "rate_limited": 429,
    "concurrency_limited": 429,
    "overloaded": 503,
}


def error_from_body(body: dict[str, Any], status: int | None = None) -> AgentryError:
    """The exception for one error body (an HTTP response's, a run's `error` event's, a WebSocket error frame's:
    `status` is None for the last two)."""
    cls = _BY_STATUS.get(status or _STATUS_OF_CODE.get(str(body.get("code")), 0), AgentryError)
    return cls(str(body.get("code", "unexpected_response")), str(body.get("detail", "")), status=status, body=body)


def error_from_response(response: httpx.Response) -> AgentryError:
    """The exception for a non-2xx response; the body must have been read."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "code" not in body:
        text = response.text[:200] if response.text else response.reason_phrase
        body = {"code": "unexpected_response", "detail": text}
    retry_after = response.headers.get("Retry-After", "")
    if "retry_after" not in body and retry_after.isdigit():
        body["retry_after"] = int(retry_after)
    return error_from_body(body, response.status_code)
