"""Authorization in one place: who may do what in which tenant.

The foundation decides membership; roles, API keys and sharing build on these helpers.
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from rest_framework.permissions import BasePermission

from accounts.models import Membership


def membership_for(user, tenant) -> Membership | None:
    """The user's membership in `tenant`, or None (anonymous users, the public schema, strangers)."""
    if user is None or isinstance(user, AnonymousUser) or not user.is_authenticated:
        return None
    if tenant is None or tenant.schema_name == "public":
        return None
    return Membership.objects.filter(user_id=user.pk, tenant_id=tenant.pk).first()


class IsTenantMember(BasePermission):
    """Default API permission: an authenticated member of the tenant the request's host names."""

    message = "You are not a member of this organisation."

    def has_permission(self, request, view) -> bool:
        membership = membership_for(request.user, getattr(request, "tenant", None))
        request.membership = membership
        return membership is not None


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
        return view(request, *args, **kwargs)

    return wrapper
