"""Third-party login: OpenID Connect end to end against a real provider on 127.0.0.1 (no mocks)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
import requests
from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialAccount

from accounts.models import User

from .fake_oidc import FakeOIDCProvider
from .helpers import client_for

pytestmark = pytest.mark.django_db

PROVIDER_ID = "fakeidp"


@pytest.fixture
def idp(settings):
    user = {"sub": "idp-user-42", "email": "sso.person@example.com", "email_verified": True, "name": "SSO Person"}
    with FakeOIDCProvider(client_id="agentry-test", client_secret="idp-secret", user=user) as provider:
        settings.SOCIALACCOUNT_PROVIDERS = {
            "openid_connect": {
                "APPS": [
                    {
                        "provider_id": PROVIDER_ID,
                        "name": "Fake IdP",
                        "client_id": "agentry-test",
                        "secret": "idp-secret",
                        "settings": {"server_url": provider.issuer, "oauth_pkce_enabled": True},
                    }
                ]
            }
        }
        yield provider


def _start_login(client) -> str:
    response = client.post(f"/accounts/oidc/{PROVIDER_ID}/login/")
    assert response.status_code == 302, response.content
    return response["Location"]


def test_oidc_login_creates_and_logs_in_user(tenant_a, idp):
    client = client_for(tenant_a)
    authorize_url = _start_login(client)
    assert authorize_url.startswith(f"{idp.issuer}/authorize?")
    query = parse_qs(urlparse(authorize_url).query)
    assert query["code_challenge_method"] == ["S256"] and query["state"]
    # The browser follows the redirect to the provider, which redirects back with a code.
    at_idp = requests.get(authorize_url, allow_redirects=False, timeout=5)
    assert at_idp.status_code == 302
    callback = urlparse(at_idp.headers["Location"])
    assert callback.hostname == "acme.localhost"
    done = client.get(f"{callback.path}?{callback.query}")
    assert done.status_code == 302, done.content
    user = User.objects.get(email="sso.person@example.com")
    assert SocialAccount.objects.get(user=user).uid == "idp-user-42"
    assert EmailAddress.objects.get(user=user).verified
    assert client.session["_auth_user_id"] == str(user.pk)
    # The code was exchanged server-side and the user info fetched, over real HTTP.
    assert "POST /token" in idp.requests and "GET /userinfo" in idp.requests


def test_oidc_login_reaches_existing_account_by_verified_email(tenant_a, admin_a, idp):
    # Only an address verified on our side too may be taken over by a provider login.
    EmailAddress.objects.create(user=admin_a, email=admin_a.email, verified=True, primary=True)
    idp.user = {**idp.user, "email": admin_a.email}
    client = client_for(tenant_a)
    at_idp = requests.get(_start_login(client), allow_redirects=False, timeout=5)
    callback = urlparse(at_idp.headers["Location"])
    assert client.get(f"{callback.path}?{callback.query}").status_code == 302
    assert client.session["_auth_user_id"] == str(admin_a.pk)
    assert client.get("/api/v1/me/").json()["email"] == admin_a.email


def test_oidc_callback_with_wrong_state_is_refused(tenant_a, idp):
    client = client_for(tenant_a)
    at_idp = requests.get(_start_login(client), allow_redirects=False, timeout=5)
    callback = urlparse(at_idp.headers["Location"])
    code = parse_qs(callback.query)["code"][0]
    users_before = User.objects.count()
    response = client.get(f"{callback.path}?code={code}&state=forged-state")
    assert response.status_code == 401
    assert b"Third-Party Login Failure" in response.content
    assert "_auth_user_id" not in client.session
    assert User.objects.count() == users_before
    assert "POST /token" not in idp.requests  # the code was never exchanged


def test_oidc_callback_in_another_browser_is_refused(tenant_a, idp):
    # The state is bound to the session that started the login: a stolen callback URL is useless.
    at_idp = requests.get(_start_login(client_for(tenant_a)), allow_redirects=False, timeout=5)
    callback = urlparse(at_idp.headers["Location"])
    other = client_for(tenant_a)
    assert other.get(f"{callback.path}?{callback.query}").status_code == 401
    assert "_auth_user_id" not in other.session
    assert not User.objects.filter(email="sso.person@example.com").exists()


def test_provider_is_off_without_configuration(tenant_a, settings):
    settings.SOCIALACCOUNT_PROVIDERS = {}
    response = client_for(tenant_a).post(f"/accounts/oidc/{PROVIDER_ID}/login/")
    assert response.status_code == 404
