"""allauth browser accounts: sign-up with mandatory verification, login throttling, logout, password
reset and change, email change with re-verification. Email goes to Django's locmem outbox."""

from __future__ import annotations

import re

import pytest
from allauth.account.models import EmailAddress
from django.core import mail

from accounts.models import User
from conftest import PASSWORD

from .helpers import client_for

pytestmark = pytest.mark.django_db
NEW_PASSWORD = "another-horse-staple-42"


def _link(message, fragment: str) -> str:
    url = re.search(rf"https?://[^/\s]+(/accounts/{fragment}[^\s]*)", message.body)
    assert url, message.body
    return url.group(1)


def _verified(email: str) -> EmailAddress:
    user = User.objects.get(email=email)
    address, _ = EmailAddress.objects.get_or_create(user=user, email=email, defaults={"primary": True})
    address.verified = True
    address.save()
    return address


def _sign_up(public_client, email: str, slug: str) -> None:
    """Accounts come with an organisation: the public sign-up page (allauth's own form is closed)."""
    response = public_client.post(
        "/signup/", {"name": slug.title(), "slug": slug, "email": email, "password": PASSWORD}
    )
    assert response.status_code == 302, response.content


def test_signup_requires_email_verification(public_client, tenant_a):
    _sign_up(public_client, "fresh@example.com", "fresh-co")
    client = client_for(tenant_a)
    # Logging in before verifying logs nobody in (and says a mail is on its way).
    client.post("/accounts/login/", {"login": "fresh@example.com", "password": PASSWORD})
    assert "_auth_user_id" not in client.session
    confirm = _link(mail.outbox[0], "confirm-email/")
    assert public_client.get(confirm).status_code == 200  # a page with a button: GET changes nothing
    assert not EmailAddress.objects.get(email="fresh@example.com").verified
    assert public_client.post(confirm).status_code == 302
    assert EmailAddress.objects.get(email="fresh@example.com").verified
    assert client.post("/accounts/login/", {"login": "fresh@example.com", "password": PASSWORD}).status_code == 302
    assert client.session["_auth_user_id"] == str(User.objects.get(email="fresh@example.com").pk)


def test_forged_confirmation_key_changes_nothing(public_client):
    _sign_up(public_client, "fresh2@example.com", "fresh2-co")
    response = public_client.post("/accounts/confirm-email/forged-key/")
    assert response.status_code in (200, 404)
    assert not EmailAddress.objects.get(email="fresh2@example.com").verified


def test_login_and_logout(tenant_a, admin_a):
    _verified(admin_a.email)
    client = client_for(tenant_a)
    assert client.post("/accounts/login/", {"login": admin_a.email, "password": PASSWORD}).status_code == 302
    assert client.get("/api/v1/me/").status_code == 200
    client.post("/accounts/logout/")
    assert client.get("/api/v1/me/").status_code in (401, 403)


def test_failed_logins_are_throttled(tenant_a, admin_a):
    _verified(admin_a.email)
    client = client_for(tenant_a)
    for _ in range(5):
        response = client.post("/accounts/login/", {"login": admin_a.email, "password": "wrong-password"})
        assert response.status_code == 200  # form with an error
    response = client.post("/accounts/login/", {"login": admin_a.email, "password": PASSWORD})
    assert "_auth_user_id" not in client.session
    # Even the right password is refused now, with a clear message (or a 429 from the platform limiter).
    assert b"Too many failed login attempts" in response.content or response.status_code == 429, (
        response.status_code,
        response.content[:300],
    )


def test_password_reset(tenant_a, admin_a):
    _verified(admin_a.email)
    client = client_for(tenant_a)
    assert client.post("/accounts/password/reset/", {"email": admin_a.email}).status_code == 302
    reset = _link(mail.outbox[-1], "password/reset/key/")
    page = client.get(reset)
    if page.status_code == 302:  # allauth moves the key into the session, then shows the form
        reset = page["Location"]
    response = client.post(reset, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert response.status_code == 302
    admin_a.refresh_from_db()
    assert admin_a.check_password(NEW_PASSWORD)
    # The link is single use.
    again = client_for(tenant_a).post(reset, {"password1": PASSWORD, "password2": PASSWORD})
    admin_a.refresh_from_db()
    assert admin_a.check_password(NEW_PASSWORD) and again.status_code in (200, 302, 400)


def test_password_change(tenant_a, admin_a):
    client = client_for(tenant_a)
    client.force_login(admin_a)
    bad = client.post(
        "/accounts/password/change/", {"oldpassword": "wrong", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD}
    )
    assert bad.status_code == 200
    admin_a.refresh_from_db()
    assert admin_a.check_password(PASSWORD)
    ok = client.post(
        "/accounts/password/change/", {"oldpassword": PASSWORD, "password1": NEW_PASSWORD, "password2": NEW_PASSWORD}
    )
    assert ok.status_code == 302
    admin_a.refresh_from_db()
    assert admin_a.check_password(NEW_PASSWORD)


def test_email_change_needs_reverification(tenant_a, admin_a):
    _verified(admin_a.email)
    client = client_for(tenant_a)
    client.force_login(admin_a)
    response = client.post("/accounts/email/", {"action_add": "", "email": "new-address@example.com"})
    assert response.status_code == 302
    admin_a.refresh_from_db()
    assert admin_a.email == "admin@acme.test"  # unchanged until the new address is verified
    new = EmailAddress.objects.get(email="new-address@example.com")
    assert not new.verified
    client.post(_link(mail.outbox[-1], "confirm-email/"))
    admin_a.refresh_from_db()
    assert admin_a.email == "new-address@example.com"
    assert not EmailAddress.objects.filter(email="admin@acme.test").exists()
