"""Authorization in one place: may this principal (user or API key) do this action on this object
in this tenant?

Every view, consumer and task asks here. Objects a principal may not see answer 404 (NotFound),
never 403, so IDs leak nothing. Visible objects whose action is not allowed answer 403 (Forbidden).

Contract used by the other apps (keep these signatures stable):
    principal_from_request(request) -> Principal
    resource_queryset_for(principal, queryset) -> QuerySet        # what the principal may see
    resource_get_for_principal(principal, queryset, pk, action) -> obj
    principal_can(principal, action, obj) -> bool
Actions: "view", "use" (chat, search), "edit", "delete", "share", "manage" (admin-only settings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.db.models import Model, Q, QuerySet
from rest_framework.exceptions import NotAuthenticated
from rest_framework.permissions import BasePermission

from accounts.models import Membership, Role

from .errors import Forbidden, NotFound

ACTIONS = ("view", "use", "edit", "delete", "share", "manage")
ALL_SCOPES = frozenset({"read", "write", "chat", "admin"})
# Which API-key scope an action needs.
SCOPE_FOR_ACTION = {"view": "read", "use": "chat", "edit": "write", "delete": "write", "share": "write",
                    "manage": "admin"}


@dataclass(frozen=True)
class Principal:
    """Who is acting: a member user, or an API key acting for its creator with limited scopes."""

    tenant: Any
    user: Any  # accounts.User (for API keys: the key's creator)
    role: str
    api_key: Any = None
    scopes: frozenset[str] = field(default=ALL_SCOPES)

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def is_readonly(self) -> bool:
        return self.role == Role.READONLY

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def membership_for(user, tenant) -> Membership | None:
    """The user's membership in `tenant`, or None (anonymous users, the public schema, strangers)."""
    if user is None or isinstance(user, AnonymousUser) or not user.is_authenticated:
        return None
    if tenant is None or tenant.schema_name == "public":
        return None
    return Membership.objects.filter(user_id=user.pk, tenant_id=tenant.pk).first()


def principal_from_request(request) -> Principal:
    principal = getattr(request, "principal", None)
    if principal is not None:
        return principal
    membership = membership_for(getattr(request, "user", None), getattr(request, "tenant", None))
    if membership is None:
        raise NotAuthenticated("Authentication credentials were not provided.")
    principal = Principal(tenant=request.tenant, user=request.user, role=membership.role)
    request.principal = principal
    return principal


def _visible_q(principal: Principal) -> Q:
    if principal.is_admin:
        return Q()
    return Q(owner_id=principal.user.pk) | ~Q(org_access="none")


def resource_queryset_for(principal: Principal, queryset: QuerySet) -> QuerySet:
    """Only the rows of `queryset` (a SharedResource model) that the principal may see."""
    return queryset.filter(_visible_q(principal))


def principal_can(principal: Principal, action: str, obj: Model) -> bool:
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    if not principal.has_scope(SCOPE_FOR_ACTION[action]):
        return False
    if action == "manage":
        return principal.is_admin
    if principal.is_admin:
        return True
    is_owner = getattr(obj, "owner_id", None) == principal.user.pk
    if action in ("view", "use"):
        return is_owner or getattr(obj, "org_access", "none") != "none"
    if principal.is_readonly:
        return False
    if action in ("delete", "share"):
        return is_owner
    return is_owner or getattr(obj, "org_access", "none") == "editor"  # edit


def resource_get_for_principal(principal: Principal, queryset: QuerySet, pk, action: str = "view"):
    """Fetch one object or raise NotFound (invisible) / Forbidden (visible, action not allowed)."""
    obj = resource_queryset_for(principal, queryset).filter(pk=pk).first()
    if obj is None:
        raise NotFound("Not found.")
    if not principal_can(principal, action, obj):
        raise Forbidden(f"You may not {action} this {queryset.model._meta.verbose_name}.")
    return obj


class IsTenantMember(BasePermission):
    """Default API permission: an authenticated member of the tenant the request's host names."""

    message = "You are not a member of this organisation."

    def has_permission(self, request, view) -> bool:
        membership = membership_for(request.user, getattr(request, "tenant", None))
        request.membership = membership
        if membership is None:
            return False
        request.principal = Principal(tenant=request.tenant, user=request.user, role=membership.role)
        return True


def member_required(view):
    """Dashboard decorator: login required; non-members get a clear 403 page, never data."""
    from functools import wraps

    from django.contrib.auth.views import redirect_to_login
    from django.shortcuts import render

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        membership = membership_for(request.user, getattr(request, "tenant", None))
        if membership is None:
            return render(request, "errors/not_member.html", status=403)
        request.membership = membership
        request.principal = Principal(tenant=request.tenant, user=request.user, role=membership.role)
        return view(request, *args, **kwargs)

    return wrapper
