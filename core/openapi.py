"""The API contract's shared parts: the one error schema, and the schema class that declares it on every operation.

drf-spectacular builds /api/v1/schema/ from the views. `ContractAutoSchema` (REST_FRAMEWORK DEFAULT_SCHEMA_CLASS)
adds to each operation the errors any call of that kind can meet, all with the body `core.errors.error_body()`
builds: 400 where there is input to refuse, 401 and 403 where the caller must be authenticated, 404 where the path
names an object, 429 where a rate limit applies. A view declares the errors only it raises (409, 413, 503, ...)
with `error_responses(...)`, so the error schema is written once, here.
"""

from __future__ import annotations

from typing import Any

import uritemplate
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import is_list_serializer
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema_field
from rest_framework import serializers
from rest_framework.permissions import AllowAny

from .errors import ErrorCode
from .ratelimit import view_rate_group


@extend_schema_field(
    {
        "oneOf": [
            {"type": "array", "items": {"type": "string"}},
            {"type": "object", "additionalProperties": True},
        ],
        "description": "The messages of one field; for a list or an object, its items or keys at fault, each "
        'with its own messages (`{"0": ["Not a valid integer."]}`).',
    }
)
class FieldErrorsField(serializers.JSONField):
    pass


class ErrorSerializer(serializers.Serializer[dict[str, Any]]):
    """Every error, over HTTP, SSE and WebSocket (docs/errors.md lists each code). Errors may add context keys
    (`retry_after`, `quota`, `scope`, `required_scope`, ...); clients branch on `code`, never on `detail`."""

    code = serializers.ChoiceField(
        choices=[(code.value, code.name) for code in ErrorCode], help_text="Stable error code: branch on this."
    )
    detail = serializers.CharField(help_text="A sentence for humans; may change.")
    field = serializers.CharField(required=False, help_text="The input field at fault, when there is one.")
    retry_after = serializers.IntegerField(
        required=False, help_text="Seconds to wait before trying again (also in the Retry-After header)."
    )

    def get_fields(self) -> dict[str, Any]:
        # A field named "fields" cannot be a class attribute: it would shadow Serializer.fields.
        fields = serializers.DictField(
            child=FieldErrorsField(),
            required=False,
            help_text="Validation errors: every field at fault with its messages.",
        )
        return {**super().get_fields(), "fields": fields}


def _example(status: int, code: ErrorCode, detail: str, **extra: Any) -> OpenApiExample:
    return OpenApiExample(code.value, value={"code": code.value, "detail": detail, **extra}, status_codes=[status])


# The errors by HTTP status, each with the codes it carries (docs/errors.md has them all).
ERRORS: dict[int, tuple[str, list[OpenApiExample]]] = {
    400: (
        "Invalid input: `invalid` (with `field`/`fields`), `parse_error`, `nesting_too_deep`.",
        [_example(400, ErrorCode.INVALID, "name: This field is required.", fields={"name": ["Required."]})],
    ),
    401: (
        "Missing or unusable credentials: `not_authenticated`, `token_not_valid`, `api_key_invalid`, ...",
        [_example(401, ErrorCode.NOT_AUTHENTICATED, "Authentication credentials were not provided.")],
    ),
    402: (
        "The organisation's plan quota is used up: `quota_exceeded`.",
        [_example(402, ErrorCode.QUOTA_EXCEEDED, "Quota 'chat_messages' exceeded.", quota="chat_messages")],
    ),
    403: (
        "Not allowed: `permission_denied`, `scope_required`, `readonly`, `admin_required`, or a sub-limit's "
        "`quota_exceeded`.",
        [_example(403, ErrorCode.SCOPE_REQUIRED, "This API key lacks the 'write' scope.", required_scope="write")],
    ),
    404: (
        "No such object, or not one you may see: `not_found`.",
        [_example(404, ErrorCode.NOT_FOUND, "Not found.")],
    ),
    409: (
        "The object's state forbids it: `conflict`, `last_admin`.",
        [_example(409, ErrorCode.CONFLICT, "This answer has already finished.")],
    ),
    413: (
        "Too large: `payload_too_large` (the request body), `file_too_large` (an uploaded file).",
        [_example(413, ErrorCode.FILE_TOO_LARGE, "big.pdf is larger than the limit of 52428800 bytes.")],
    ),
    415: (
        "A file type the pipeline cannot read: `unsupported_type`.",
        [_example(415, ErrorCode.UNSUPPORTED_TYPE, "photo.bmp: this file type is not supported.")],
    ),
    422: (
        "A document with no readable text: `empty_document`, `unreadable_document`.",
        [_example(422, ErrorCode.EMPTY_DOCUMENT, "scan.pdf: no text could be extracted.")],
    ),
    429: (
        "Too many requests or runs: `rate_limited`, `concurrency_limited`. Retry after `retry_after` seconds.",
        [_example(429, ErrorCode.RATE_LIMITED, "Too many read requests. Retry in 12s.", retry_after=12)],
    ),
    503: (
        "A dependency is unavailable: `search_unavailable`, `embedder_unavailable`, `overloaded`, "
        "`database_unavailable`. Retry later.",
        [_example(503, ErrorCode.SEARCH_UNAVAILABLE, "Search is unavailable right now. Try again later.")],
    ),
    507: (
        "The document store is full: `insufficient_storage`. Nothing was stored; retry once space is freed.",
        [_example(507, ErrorCode.INSUFFICIENT_STORAGE, "The document store is full; nothing was stored.")],
    ),
}


def error_response(status: int) -> OpenApiResponse:
    description, examples = ERRORS[status]
    return OpenApiResponse(ErrorSerializer, description=description, examples=examples)


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    """The errors an operation raises beyond those ContractAutoSchema implies:
    `@extend_schema(responses={200: AgentSerializer, **error_responses(409)})`."""
    return {status: error_response(status) for status in statuses}


class ContractAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, plus the error responses every operation can meet and `_list` operation ids
    for collection responses (`{"results": [...]}`)."""

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        for status in self._implied_error_statuses():
            # drf-spectacular's own helper (unannotated): the same rendering as the view's declared responses.
            declared = self._get_response_for_code(  # type: ignore[no-untyped-call]
                error_response(status), str(status), ("application/json",), direction
            )
            responses.setdefault(str(status), declared)
        return dict(sorted(responses.items()))

    def _implied_error_statuses(self) -> list[int]:
        statuses = []
        if self._takes_input():
            statuses.append(400)
        if self.view.authentication_classes and not all(
            isinstance(permission, type) and issubclass(permission, AllowAny)
            for permission in self.view.permission_classes
        ):
            statuses += [401, 403]
        if uritemplate.variables(self.path):
            statuses.append(404)
        if view_rate_group(self.view, self.method):
            statuses.append(429)
        return statuses

    def _takes_input(self) -> bool:
        if any(
            not isinstance(parameter, OpenApiParameter) or parameter.location == OpenApiParameter.QUERY
            for parameter in self.get_override_parameters()
        ):
            return True
        return self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None

    def get_operation_id(self) -> str:
        operation_id: str = super().get_operation_id()
        if self.method == "GET" and operation_id.endswith("_retrieve") and self._returns_collection():
            return operation_id.removesuffix("_retrieve") + "_list"
        return operation_id

    def _returns_collection(self) -> bool:
        response = self.get_response_serializers()
        if isinstance(response, dict) and response:
            response = response.get(200, response.get("200"))
        if isinstance(response, OpenApiResponse):
            response = response.response
        if isinstance(response, type):
            response = response()
        if not isinstance(response, serializers.Serializer):
            return False
        return is_list_serializer(response.fields.get("results"))
