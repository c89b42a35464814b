"""Sign-in edge cases that would otherwise reach the user as a server error."""

from __future__ import annotations

from collections.abc import Callable

from allauth.socialaccount.models import SocialApp
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


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
