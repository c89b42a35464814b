"""Python client of the Agentry API: `Agentry`, the exceptions carrying the server's error codes, typed models."""

from .client import Agentry, answer_text, run_status
from .errors import (
    AgentryError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    IngestionFailedError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    RetryableError,
    ServiceUnavailableError,
)
from .streams import ChatSocket, EventStream

__all__ = [
    "Agentry",
    "AgentryError",
    "AuthenticationError",
    "BadRequestError",
    "ChatSocket",
    "ConflictError",
    "EventStream",
    "IngestionFailedError",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "RetryableError",
    "ServiceUnavailableError",
    "answer_text",
    "run_status",
]
