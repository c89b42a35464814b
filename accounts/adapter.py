"""allauth adapters: where a login lands, and who may create an account.

Every account belongs somewhere: it is made by creating an organisation (the public sign-up page) or by accepting
an invitation (iam's invitation page). allauth's own sign-up form would make a user with no organisation, who could
only see "you are not a member" pages, so it is closed; its page explains the two ways in instead.
"""

from __future__ import annotations

from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.http import HttpRequest
from django.urls import reverse


def _on_public_site(request: HttpRequest) -> bool:
    tenant = getattr(request, "tenant", None)  # set by the tenant middleware
    return tenant is None or tenant.schema_name == "public"


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request: HttpRequest) -> bool:
        return False

    def get_login_redirect_url(self, request: HttpRequest) -> str:
        # The public site has no dashboard: a login there continues into the user's organisation(s).
        if _on_public_site(request):
            return reverse("org_picker")
        return super().get_login_redirect_url(request)


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    def is_open_for_signup(self, request: HttpRequest, sociallogin: object) -> bool:
        # Single sign-on keeps creating accounts on first login: the identity provider vouches for the person,
        # and an organisation's admin admits them (an invitation to that address joins them).
        return True
