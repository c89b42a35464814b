"""What every dashboard template may show, as the access policy decides it (templates never read roles)."""

from __future__ import annotations

from django.http import HttpRequest

from .policy import principal_can_create, principal_can_manage


def access(request: HttpRequest) -> dict[str, bool]:
    principal = getattr(request, "principal", None)  # set by the dashboard guards (iam.policy)
    return {
        "can_manage_org": principal is not None and principal_can_manage(principal),
        # May create agents and knowledge bases (not a read-only member): pages offer "create" only then.
        "can_create_resources": principal is not None and principal_can_create(principal),
    }
