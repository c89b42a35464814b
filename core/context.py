"""Per-request / per-task context (tenant, request id) carried in contextvars for logs."""

from contextvars import ContextVar

current_request_id: ContextVar[str] = ContextVar("current_request_id", default="-")
current_tenant: ContextVar[str] = ContextVar("current_tenant", default="-")
