"""One error vocabulary: every code the product emits, the domain exceptions that carry them, and one wire shape.

    raise Conflict("The last admin cannot be removed.", code=ErrorCode.LAST_ADMIN)

Every error a client sees, over HTTP, SSE or WebSocket, is the dict `error_body()` builds:
    {"code": "<ErrorCode>", "detail": "<sentence for humans>", ["field"], ["fields"], [extra keys]}
HTTP sends it as the response body (api_exception_handler, also for DRF's own exceptions); a run's `error` event
carries it as `data`; the chat WebSocket sends {"type": "error", "seq": 0, "data": <it>}. docs/errors.md lists
every code with its status and meaning (core/tests/test_errors.py keeps the two in step).
"""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response


class ErrorCode(StrEnum):
    """Stable codes: integrators branch on them, so a code is never renamed (add a new one instead)."""

    # Input and state
    INVALID = "invalid"
    PARSE_ERROR = "parse_error"
    NESTING_TOO_DEEP = "nesting_too_deep"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    NOT_ACCEPTABLE = "not_acceptable"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    NOT_FOUND = "not_found"
    UNKNOWN_TENANT = "unknown_tenant"
    CONFLICT = "conflict"
    LAST_ADMIN = "last_admin"
    # Authentication
    NOT_AUTHENTICATED = "not_authenticated"
    AUTHENTICATION_FAILED = "authentication_failed"
    TOKEN_NOT_VALID = "token_not_valid"  # noqa: S105 - an error code, not a secret
    TOKEN_WRONG_TENANT = "token_wrong_tenant"  # noqa: S105 - an error code, not a secret
    TOKEN_REVOKED = "token_revoked"  # noqa: S105 - an error code, not a secret
    API_KEY_INVALID = "api_key_invalid"
    API_KEY_REVOKED = "api_key_revoked"
    API_KEY_EXPIRED = "api_key_expired"
    API_KEY_OWNER_INACTIVE = "api_key_owner_inactive"
    INVITATION_INVALID = "invitation_invalid"
    INVITATION_USED = "invitation_used"
    INVITATION_EXPIRED = "invitation_expired"
    INVITATION_OTHER_EMAIL = "invitation_other_email"
    # Permission
    FORBIDDEN = "forbidden"
    PERMISSION_DENIED = "permission_denied"
    SCOPE_REQUIRED = "scope_required"
    TOPIC_REFUSED = "topic_refused"
    READONLY = "readonly"
    ADMIN_REQUIRED = "admin_required"
    # Limits
    THROTTLED = "throttled"
    RATE_LIMITED = "rate_limited"
    QUOTA_EXCEEDED = "quota_exceeded"
    CONCURRENCY_LIMITED = "concurrency_limited"
    OVERLOADED = "overloaded"
    LIMIT_EXCEEDED = "limit_exceeded"
    # Knowledge
    FILE_TOO_LARGE = "file_too_large"
    INSUFFICIENT_STORAGE = "insufficient_storage"
    UNSUPPORTED_TYPE = "unsupported_type"
    UNREADABLE_DOCUMENT = "unreadable_document"
    EMPTY_DOCUMENT = "empty_document"
    UNSAFE_URL = "unsafe_url"
    FETCH_FAILED = "fetch_failed"
    EMBEDDER_UNAVAILABLE = "embedder_unavailable"
    SEARCH_UNAVAILABLE = "search_unavailable"
    # Agents and runs
    AGENT_DISABLED = "agent_disabled"
    AGENT_MISCONFIGURED = "agent_misconfigured"
    PROVIDER_DISABLED = "provider_disabled"
    PROVIDER_MISSING = "provider_missing"
    PROVIDER_ERROR = "provider_error"
    PROVIDER_AUTH = "provider_auth"
    PROVIDER_TIMEOUT = "provider_timeout"
    CONTEXT_TOO_LONG = "context_too_long"
    SECRET_UNREADABLE = "secret_unreadable"  # noqa: S105 - an error code, not a secret
    RUN_TIMEOUT = "run_timeout"
    CANCELLED = "cancelled"
    # Tool results (inside a run's tool.result events; the run itself goes on)
    UNKNOWN_TOOL = "unknown_tool"
    INVALID_ARGUMENTS = "invalid_arguments"
    TOOL_FAILED = "tool_failed"
    TOOL_TIMEOUT = "tool_timeout"
    HTTP_FAILED = "http_failed"
    HOST_NOT_APPROVED = "host_not_approved"
    NOT_CONFIGURED = "not_configured"
    # Backups
    BACKUP_CORRUPT = "backup_corrupt"
    BACKUP_INCOMPATIBLE = "backup_incompatible"
    # Server
    PROVISIONING_FAILED = "provisioning_failed"
    INTERNAL_ERROR = "internal_error"
    DATABASE_UNAVAILABLE = "database_unavailable"


def error_body(code: ErrorCode | str, detail: str, *, field: str | None = None, **extra: Any) -> dict[str, Any]:
    """The one error shape of every transport. `extra` adds context (retry_after, quota, fields, ...)."""
    body: dict[str, Any] = {"code": str(ErrorCode(code)), "detail": str(detail)}
    if field:
        body["field"] = field
    body.update((k, v) for k, v in extra.items() if k not in body)  # extras never override the code
    return body


class DomainError(Exception):
    """Base for errors a person can act on. `code` is stable and documented; `message` is for humans.

    Subclasses set `code` and `status`; a raise site may pass a more precise `code` of the same family
    (`Forbidden(..., code=ErrorCode.ADMIN_REQUIRED)`). `headers` go out with the HTTP response (Retry-After).
    """

    code: ErrorCode = ErrorCode.INTERNAL_ERROR
    status: int = 500

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        extra: dict[str, Any] | None = None,
        code: ErrorCode | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra or {}
        self.headers: dict[str, str] = {}
        if code is not None:
            self.code = code

    def as_dict(self) -> dict[str, Any]:
        return error_body(self.code, self.message, field=self.field, **self.extra)


class InvalidInput(DomainError):
    code = ErrorCode.INVALID
    status = 400


class Conflict(DomainError):
    code = ErrorCode.CONFLICT
    status = 409


class NotFound(DomainError):
    code = ErrorCode.NOT_FOUND
    status = 404


class Forbidden(DomainError):
    code = ErrorCode.FORBIDDEN
    status = 403


class PayloadTooLarge(DomainError):
    code = ErrorCode.PAYLOAD_TOO_LARGE
    status = 413


class ProvisioningFailed(DomainError):
    code = ErrorCode.PROVISIONING_FAILED
    status = 500


_ALL_CODES = frozenset(ErrorCode)
# DRF's own exceptions, by class; AuthenticationFailed raised with one of our codes keeps it.
_DRF_CODES: dict[type[drf_exceptions.APIException], ErrorCode] = {
    drf_exceptions.ValidationError: ErrorCode.INVALID,
    drf_exceptions.ParseError: ErrorCode.PARSE_ERROR,
    drf_exceptions.AuthenticationFailed: ErrorCode.AUTHENTICATION_FAILED,
    drf_exceptions.NotAuthenticated: ErrorCode.NOT_AUTHENTICATED,
    drf_exceptions.PermissionDenied: ErrorCode.PERMISSION_DENIED,
    drf_exceptions.NotFound: ErrorCode.NOT_FOUND,
    drf_exceptions.MethodNotAllowed: ErrorCode.METHOD_NOT_ALLOWED,
    drf_exceptions.NotAcceptable: ErrorCode.NOT_ACCEPTABLE,
    drf_exceptions.UnsupportedMediaType: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    drf_exceptions.Throttled: ErrorCode.THROTTLED,
}


def _drf_code(exc: drf_exceptions.APIException, detail: Any) -> ErrorCode:
    raised = getattr(detail, "code", None)  # ErrorDetail carries the code it was raised with
    if raised in _ALL_CODES:
        return ErrorCode(raised)
    for cls in type(exc).__mro__:
        if cls in _DRF_CODES:
            return _DRF_CODES[cls]
    return ErrorCode.INTERNAL_ERROR


def _error_path(path: str, key: object) -> str:
    if key in ("non_field_errors", "detail"):
        return path
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _first_message(errors: Any, path: str = "") -> tuple[str, str] | None:
    """The first message of DRF error details and where it is, never a repr: nested serializers give dicts of
    field -> errors, list fields dicts of index -> errors (`{"ids": {0: ["..."]}}` -> ("ids[0]", "...")), lists of
    nested serializers one dict per item, empty for the valid ones."""
    if isinstance(errors, dict | list):
        items = errors.items() if isinstance(errors, dict) else enumerate(errors)
        for key, value in items:
            inner = _error_path(path, key) if isinstance(errors, dict) or isinstance(value, dict) else path
            found = _first_message(value, inner)
            if found:
                return found
        return None
    return path, str(errors)


def _validation_body(fields: Any) -> dict[str, Any]:
    """DRF ValidationError detail (dict of field -> messages, or a list) as one body; the first message leads."""
    fields = fields if isinstance(fields, dict) else {"non_field_errors": fields}
    path, first = _first_message(fields) or ("", "Invalid input.")
    return error_body(ErrorCode.INVALID, f"{path}: {first}" if path else first, fields=fields)


def _django_validation_body(exc: ValidationError) -> dict[str, Any]:
    try:
        fields = {k: [str(m) for m in v] for k, v in exc.message_dict.items()}
    except AttributeError:  # raised without a field: no message_dict
        return error_body(ErrorCode.INVALID, " ".join(str(m) for m in exc.messages))
    first = next(iter(fields.values()))[0] if fields else "Invalid input."
    return error_body(ErrorCode.INVALID, first, fields=fields)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF exception handler: every error body is `error_body(...)`, whoever raised it."""
    if isinstance(exc, DomainError):
        return Response(exc.as_dict(), status=exc.status, headers=exc.headers or None)
    if isinstance(exc, ValidationError):
        return Response(_django_validation_body(exc), status=400)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    if not isinstance(exc, drf_exceptions.APIException):
        return None  # a bug: Django's 500 handling (and logging) takes over
    headers = {}
    auth_header = getattr(exc, "auth_header", None)  # set on the instance by APIView.handle_exception for 401s
    if auth_header:
        headers["WWW-Authenticate"] = auth_header
    wait = getattr(exc, "wait", None)  # Throttled's seconds to wait (the DRF stubs do not declare it)
    if wait:
        headers["Retry-After"] = str(int(wait))
    if isinstance(exc, drf_exceptions.ValidationError):
        body = _validation_body(exc.detail)
    else:
        detail = exc.detail
        if isinstance(detail, dict) and "detail" in detail:  # simplejwt's InvalidToken: {"detail", "code", ...}
            detail = detail["detail"]
        body = error_body(_drf_code(exc, detail), str(detail))
    return Response(body, status=exc.status_code, headers=headers or None)


def error_event(body: dict[str, Any]) -> dict[str, Any]:
    """A WebSocket error frame outside a run's stream: the envelope of a run's `error` event, seq 0."""
    return {"type": "error", "seq": 0, "data": body}


DATABASE_RETRY_AFTER_SECONDS = 5


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500 of every URL conf. Django calls it for an exception nothing else handled, from any layer (a
    middleware's query as much as a view's), with the exception still being handled. A database that cannot be
    reached (restarting, failing over, out of connections) is not a bug: 503 with the error body and Retry-After,
    and the next request gets a fresh connection. Anything else is Django's own 500 page."""
    exc = sys.exc_info()[1]
    if isinstance(exc, OperationalError | InterfaceError):
        body = error_body(ErrorCode.DATABASE_UNAVAILABLE, "The database is unavailable; retry shortly.")
        response = JsonResponse(body, status=503)
        response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return response
    return defaults.server_error(request)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler404 of every URL conf. A path under /api/ that no route matches (an id that is not an integer, a
    typo) gets the error body every API 404 has, as the contract declares; pages keep Django's 404 page."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body(ErrorCode.NOT_FOUND, "Not found."), status=404)
    return defaults.page_not_found(request, exception)
