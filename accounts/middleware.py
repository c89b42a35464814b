"""Who a browser request is (its session's member), and sign-in edge cases that would otherwise reach the user as a
server error."""

from __future__ import annotations

from collections.abc import Callable

from allauth.socialaccount.models import SocialApp
from django.conf import settings
from django.contrib import auth
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.crypto import constant_time_compare
from django.utils.functional import SimpleLazyObject

from iam.members import member_get

from .models import User


class MemberAuthenticationMiddleware(AuthenticationMiddleware):
    """Django's AuthenticationMiddleware, except that on an organisation's host a session of one of its members is
    answered from the process's cache of members (iam.members) instead of the users table. Only a session whose
    user and hash verify exactly as django.contrib.auth.get_user would verify them takes that path; anything else (no
    session, a stranger, a hash to rotate or refuse) goes through get_user itself."""

    def process_request(self, request: HttpRequest) -> None:
        super().process_request(request)
        request.user = SimpleLazyObject(lambda: _session_user(request))


def _session_user(request: HttpRequest) -> User | AnonymousUser:
    # The attribute django.contrib.auth.middleware.get_user memoises in: one user per request either way.
    if not hasattr(request, "_cached_user"):
        request._cached_user = _session_member(request) or auth.get_user(request)  # type: ignore[attr-defined]
    user: User | AnonymousUser = request._cached_user  # type: ignore[attr-defined]
    return user


def _session_member(request: HttpRequest) -> User | None:
    tenant = getattr(request, "tenant", None)  # set by tenants.middleware.TenantMiddleware
    if tenant is None or tenant.schema_name == "public":
        return None
    session = request.session
    try:
        user_id = int(session[auth.SESSION_KEY])
        backend_path = session[auth.BACKEND_SESSION_KEY]
        session_hash = session[auth.HASH_SESSION_KEY]
    except (KeyError, TypeError, ValueError):
        return None
    # The backends that load users by id from the table (ModelBackend.get_user: active users only), as member_get.
    if backend_path not in settings.AUTHENTICATION_BACKENDS or not isinstance(
        auth.load_backend(backend_path), ModelBackend
    ):
        return None
    membership = member_get(user_id, tenant)
    if membership is None or not constant_time_compare(session_hash, membership.user.get_session_auth_hash()):
        return None
    return membership.user


class UnconfiguredProviderMiddleware:
    """Every supported sign-in provider (Google, GitHub, OpenID Connect) is installed so an operator can switch one
    on from the environment or the admin; until then allauth raises SocialApp.DoesNotExist on its pages. That is a
    404 with a clear page, not a 500."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, SocialApp.DoesNotExist):
            message = "This sign-in method is not set up for this site. Sign in with your email address instead."
            return render(
                request, "errors/domain_error.html", {"error": {"message": message, "status": 404}}, status=404
            )
        return None
