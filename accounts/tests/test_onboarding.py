"""Onboarding: a login on the public site continues into the user's organisation (one: straight in; several: a
picker) through a one-time login handoff to the organisation's host; accounts come only with an organisation or an
invitation; the sign-up page sends the confirmation mail it promises and shows every error at once."""

from __future__ import annotations

import re
import time
from urllib.parse import urlparse

import pytest
from allauth.account.models import EmailAddress
from django.core import mail, signing
from django.test import Client

from accounts.handoff import HANDOFF_SALT, login_handoff_issue
from accounts.models import Membership, Role, User
from conftest import PASSWORD

from .helpers import client_for, member_create

pytestmark = pytest.mark.django_db


def _verified(user: User) -> None:
    EmailAddress.objects.update_or_create(user=user, email=user.email, defaults={"verified": True, "primary": True})


def _public_login(public_client: Client, user: User):
    return public_client.post("/accounts/login/", {"login": user.email, "password": PASSWORD})


def _follow_into_org(public_client: Client, location: str) -> tuple[Client, str]:
    """Follow public-site redirects until one leaves for an organisation's host; redeem it there like a browser."""
    for _ in range(5):
        parsed = urlparse(location)
        if parsed.hostname and parsed.hostname != "localhost":
            tenant_client = Client(HTTP_HOST=parsed.hostname)
            return tenant_client, parsed.path
        location = public_client.get(location)["Location"]
    raise AssertionError(f"never left the public site: {location}")


def test_public_login_with_one_organisation_lands_in_it_with_a_session_there(public_client, tenant_a, admin_a):
    _verified(admin_a)
    response = _public_login(public_client, admin_a)
    assert response.status_code == 302 and response["Location"] == "/organisations/"
    tenant_client, handoff_path = _follow_into_org(public_client, response["Location"])
    assert handoff_path.startswith("/login/handoff/")
    landed = tenant_client.get(handoff_path)
    assert landed.status_code == 302 and landed["Location"] == "/"
    home = tenant_client.get("/")
    assert home.status_code == 200 and tenant_a.name.encode() in home.content
    assert tenant_client.session["_auth_user_id"] == str(admin_a.pk)


def test_public_login_with_several_organisations_shows_a_picker(public_client, tenant_a, tenant_b):
    user = member_create(tenant_a, role=Role.USER, email="both@orgs.test")
    Membership.objects.create(user=user, tenant=tenant_b, role=Role.READONLY)
    _verified(user)
    response = _public_login(public_client, user)
    picker = public_client.get(response["Location"])
    assert picker.status_code == 200
    assert b"/organisations/acme/open/" in picker.content and b"/organisations/globex/open/" in picker.content
    opened = public_client.get("/organisations/globex/open/")
    assert urlparse(opened["Location"]).hostname == "globex.localhost"
    globex = Client(HTTP_HOST="globex.localhost")
    assert globex.get(urlparse(opened["Location"]).path).status_code == 302
    assert globex.get("/").status_code == 200


def test_user_without_organisation_is_offered_to_create_one(public_client):
    user = User.objects.create_user(email="lonely@nowhere.test", password=PASSWORD)
    _verified(user)
    _public_login(public_client, user)
    picker = public_client.get("/organisations/")
    assert picker.status_code == 200
    assert b"not a member of any organisation" in picker.content and b'href="/signup/"' in picker.content


def test_picker_refuses_an_organisation_the_user_is_not_in(public_client, tenant_b, admin_a):
    public_client.force_login(admin_a)
    response = public_client.get("/organisations/globex/open/")
    assert response.status_code == 302 and response["Location"] == "/organisations/"


def test_handoff_token_is_single_use(tenant_a, admin_a):
    token = login_handoff_issue(user=admin_a, tenant=tenant_a)
    first = client_for(tenant_a)
    assert first.get(f"/login/handoff/{token}/")["Location"] == "/"
    replay = client_for(tenant_a)
    response = replay.get(f"/login/handoff/{token}/")
    assert response["Location"].startswith("/accounts/login/")
    assert "_auth_user_id" not in replay.session


def test_handoff_token_works_only_on_its_own_organisation(tenant_a, tenant_b, admin_a):
    Membership.objects.create(user=admin_a, tenant=tenant_b, role=Role.USER)
    token = login_handoff_issue(user=admin_a, tenant=tenant_a)
    other = client_for(tenant_b)
    assert other.get(f"/login/handoff/{token}/")["Location"].startswith("/accounts/login/")
    assert "_auth_user_id" not in other.session


def test_forged_or_expired_handoff_tokens_are_refused(tenant_a, admin_a, monkeypatch):
    forged = signing.dumps({"u": admin_a.pk, "t": tenant_a.schema_name, "n": "x"}, salt="some-other-salt")
    client = client_for(tenant_a)
    assert client.get(f"/login/handoff/{forged}/")["Location"].startswith("/accounts/login/")
    token = signing.dumps({"u": admin_a.pk, "t": tenant_a.schema_name, "n": "fresh"}, salt=HANDOFF_SALT)
    later = time.time() + 120
    monkeypatch.setattr(signing.time, "time", lambda: later)
    assert client.get(f"/login/handoff/{token}/")["Location"].startswith("/accounts/login/")
    assert "_auth_user_id" not in client.session


def test_handoff_refused_once_membership_is_gone(tenant_a, admin_a):
    user = member_create(tenant_a, role=Role.USER)
    token = login_handoff_issue(user=user, tenant=tenant_a)
    Membership.objects.filter(user=user, tenant=tenant_a).delete()
    client = client_for(tenant_a)
    assert client.get(f"/login/handoff/{token}/")["Location"].startswith("/accounts/login/")


def test_organisation_login_page_links_to_creating_an_organisation_not_a_bare_account(tenant_a):
    page = client_for(tenant_a).get("/accounts/login/")
    assert page.status_code == 200
    assert b"http://localhost:" in page.content and b"/signup/" in page.content
    assert b"/accounts/signup/" not in page.content
    assert b"invitation" in page.content


def test_allauth_signup_creates_no_account_and_explains_the_ways_in(tenant_a):
    client = client_for(tenant_a)
    page = client.post(
        "/accounts/signup/", {"email": "stray@example.com", "password1": PASSWORD, "password2": PASSWORD}
    )
    assert page.status_code == 200 and b"Get an account" in page.content
    assert not User.objects.filter(email="stray@example.com").exists()


def test_signup_sends_the_confirmation_mail_the_page_promises(public_client):
    response = public_client.post(
        "/signup/", {"name": "Mail Co", "slug": "mail-co", "email": "owner@mail.test", "password": PASSWORD}
    )
    assert response.status_code == 302
    assert [m.to for m in mail.outbox] == [["owner@mail.test"]]
    done = public_client.get(response["Location"])
    assert b"We sent a confirmation link to <strong>owner@mail.test</strong>" in done.content
    link = re.search(r"https?://localhost[^/\s]*(/accounts/confirm-email/\S+)", mail.outbox[0].body)
    assert link, mail.outbox[0].body
    assert public_client.post(link.group(1)).status_code == 302
    assert EmailAddress.objects.get(email="owner@mail.test").verified


def test_signup_page_promises_no_mail_when_verification_is_off(public_client, settings):
    settings.ACCOUNT_EMAIL_VERIFICATION = "none"
    response = public_client.post(
        "/signup/", {"name": "Quiet Co", "slug": "quiet-co", "email": "owner@quiet.test", "password": PASSWORD}
    )
    assert response.status_code == 302 and mail.outbox == []
    done = public_client.get(response["Location"])
    assert b"confirmation link" not in done.content


def test_signup_form_shows_every_error_at_once_and_the_real_domain(public_client, admin_a):
    response = public_client.post("/signup/", {"name": "", "slug": "www", "email": admin_a.email, "password": "short"})
    assert response.status_code == 400
    form = response.context["form"]
    assert set(form.errors) == {"name", "slug", "email", "password"}, form.errors
    assert b"your-org.localhost" in response.content and b"example.com" not in response.content


def test_signed_in_person_creates_an_organisation_and_goes_straight_in(public_client, admin_a):
    public_client.force_login(admin_a)
    page = public_client.get("/signup/")
    assert b'name="password"' not in page.content
    response = public_client.post("/signup/", {"name": "Second Co", "slug": "second-co"})
    assert response.status_code == 302 and response["Location"] == "/organisations/second-co/open/"
    assert Membership.objects.filter(user=admin_a, tenant__slug="second-co", role=Role.ADMIN).exists()
