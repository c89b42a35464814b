"""An agent's run limits (tokens, time, tool steps, concurrent runs): its configured values over the defaults.

Concurrent runs are admitted and released by core.quotas (chat_run_admit / chat_run_release), the one ledger for
every scope (tenant, user, API key, this agent); `LimitExceeded` is a limit reached inside a run (tool steps).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from core.errors import DomainError, ErrorCode


class LimitExceeded(DomainError):
    code = ErrorCode.LIMIT_EXCEEDED
    status = 429


def effective_limits(configured: dict[str, Any] | None) -> dict[str, Any]:
    limits = dict(settings.AGENTS_DEFAULT_LIMITS)
    for key, value in (configured or {}).items():
        if key in limits and value is not None:
            limits[key] = value
    return limits
