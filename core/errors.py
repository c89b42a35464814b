"""One error vocabulary: domain exceptions with stable codes, mapped to HTTP in one place."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response


class DomainError(Exception):
    """Base for errors a person can act on. `code` is stable and documented; `message` is for humans."""

    code = "error"
    status = 400

    def __init__(self, message: str, *, field: str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra or {}

    def as_dict(self) -> dict:
        body = {"detail": self.message, "code": self.code}
        if self.field:
            body["field"] = self.field
        body.update(self.extra)
        return body


class InvalidInput(DomainError):
    code = "invalid"
    status = 400


class Conflict(DomainError):
    code = "conflict"
    status = 409


class NotFound(DomainError):
    code = "not_found"
    status = 404


class Forbidden(DomainError):
    code = "forbidden"
    status = 403


class ProvisioningFailed(DomainError):
    code = "provisioning_failed"
    status = 500


def _validation_detail(exc: ValidationError) -> dict:
    if hasattr(exc, "message_dict"):
        fields = {k: [str(m) for m in v] for k, v in exc.message_dict.items()}
        first = next(iter(fields.values()))[0] if fields else "Invalid input."
        return {"detail": first, "code": "invalid", "fields": fields}
    return {"detail": " ".join(str(m) for m in exc.messages), "code": "invalid"}


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF exception handler: every error body has `detail` and `code`."""
    from rest_framework.views import exception_handler  # late: rest_framework.views imports our permissions

    if isinstance(exc, DomainError):
        # Some errors carry HTTP headers (Retry-After on 429/503: issue 6).
        return Response(exc.as_dict(), status=exc.status, headers=getattr(exc, "headers", None))
    if isinstance(exc, ValidationError):
        return Response(_validation_detail(exc), status=400)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(exc, drf_exceptions.ValidationError):
        fields = data if isinstance(data, dict) else {"non_field_errors": data}
        first_field, first_errors = next(iter(fields.items()), ("", ["Invalid input."]))
        first = first_errors[0] if isinstance(first_errors, list) and first_errors else first_errors
        label = "" if first_field in ("non_field_errors", "detail") else f"{first_field}: "
        response.data = {"detail": f"{label}{first}", "code": "invalid", "fields": fields}
    elif isinstance(data, dict) and "detail" in data:
        response.data = {"detail": str(data["detail"]), "code": getattr(data["detail"], "code", "error")}
    return response
