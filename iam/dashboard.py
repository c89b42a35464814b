"""Helpers shared by the server-rendered dashboard views: membership, errors as friendly pages, the sharing panel.

Views stay thin: they parse a form, call the owning app's service or selector, and render. Domain errors
raised by services or access helpers become the same friendly pages everywhere (never a stack trace).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from core.errors import DomainError, Forbidden, NotFound
from iam.policy import admin_required, member_required, principal_can
from iam.selectors import share_list_for_resource, team_list


def error_page(request: HttpRequest, exc: DomainError) -> HttpResponse:
    if isinstance(exc, NotFound) or exc.status == 404:
        return render(request, "404.html", status=404)
    if isinstance(exc, Forbidden) or exc.status == 403:
        return render(request, "403.html", {"exception": exc.message}, status=403)
    return render(request, "errors/domain_error.html", {"error": exc}, status=exc.status)


def _with_error_pages(guard: Callable) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """`guard` (who may see the page), plus DomainError -> a friendly page with the right status."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @guard
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                return view(request, *args, **kwargs)
            except DomainError as exc:
                return error_page(request, exc)

        return wrapper

    return decorator


# Member pages (iam.policy.member_required) and admin-only pages (admin_required: other members get the 403 page).
dashboard_page = _with_error_pages(member_required)
admin_page = _with_error_pages(admin_required)


def form_error(form, exc: DomainError) -> None:
    """Attach a service's error to the form field it names (or the whole form)."""
    field = exc.field if exc.field in form.fields else None
    form.add_error(field, exc.message)


def sharing_context(principal, obj, resource_type: str) -> dict[str, Any]:
    """What the sharing panel shows: the resource's team shares and the teams to pick from (owners/admins)."""
    if not principal_can(principal, "share", obj):
        return {"can_share": False}
    return {
        "can_share": True,
        "resource_type": resource_type,
        "resource_id": obj.pk,
        "shares": share_list_for_resource(resource_type, obj.pk).select_related("team"),
        "teams": team_list(),
    }
