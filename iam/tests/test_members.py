"""Membership management: invitations (signed, expiring, single use), roles, removal, last admin."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core import mail, signing
from django.utils import timezone
from django_tenants.utils import tenant_context

from accounts.models import Membership, Role, User
from accounts.tests.helpers import client_for, jwt_client, member_create
from conftest import PASSWORD
from iam.models import Invitation
from iam.services import INVITATION_SALT

pytestmark = pytest.mark.django_db


def _invite(tenant, admin, email, role="user", django_capture_on_commit_callbacks=None):
    response = jwt_client(tenant, admin).post(
        "/api/v1/invitations/", {"email": email, "role": role}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def _link_path(message) -> str:
    return re.search(r"https?://[^/]+(/invitations/[^/\s]+/)", message.body).group(1)


def test_invite_new_user_signs_up_through_link(tenant_a, admin_a, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        _invite(tenant_a, admin_a, "new@example.com", "readonly")
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["new@example.com"]
    path = _link_path(mail.outbox[0])
    client = client_for(tenant_a)
    page = client.get(path)
    assert page.status_code == 200 and b"Create my account" in page.content
    response = client.post(path, {"password": PASSWORD, "display_name": "New Person"})
    assert response.status_code == 302
    user = User.objects.get(email="new@example.com")
    assert Membership.objects.get(user=user, tenant=tenant_a).role == Role.READONLY
    assert user.emailaddress_set.get().verified
    # Logged in straight away, and the link is spent.
    assert client.get("/api/v1/me/").json()["role"] == "readonly"
    reused = client_for(tenant_a).get(path)
    assert reused.status_code == 410 and b"already been used" in reused.content


def test_existing_user_joins_with_one_click(tenant_a, admin_a, admin_b, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        _invite(tenant_a, admin_a, admin_b.email)
    path = _link_path(mail.outbox[0])
    client = client_for(tenant_a)
    assert b"Log in to accept" in client.get(path).content
    client.force_login(admin_b)
    assert b"Join Acme" in client.get(path).content
    assert client.post(path).status_code == 302
    assert Membership.objects.get(user=admin_b, tenant=tenant_a).role == Role.USER


def test_invitation_for_other_email_refused(tenant_a, admin_a, admin_b, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        _invite(tenant_a, admin_a, "someone@example.com")
    client = client_for(tenant_a)
    client.force_login(admin_b)
    response = client.post(_link_path(mail.outbox[0]))
    assert response.status_code == 403
    assert not Membership.objects.filter(user=admin_b, tenant=tenant_a).exists()


def test_forged_invitation_link(tenant_a, admin_a):
    body = _invite(tenant_a, admin_a, "x@example.com")
    forged = signing.dumps({"i": body["id"], "n": "0" * 32}, salt=INVITATION_SALT, compress=True)
    for token in (forged, "garbage", forged[:-3] + "abc"):
        response = client_for(tenant_a).post(f"/invitations/{token}/", {"password": PASSWORD})
        assert response.status_code == 404, token
        assert b"not valid" in response.content
    assert not User.objects.filter(email="x@example.com").exists()


def test_invitation_of_tenant_a_is_invalid_on_tenant_b(tenant_a, tenant_b, admin_a, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        _invite(tenant_a, admin_a, "y@example.com")
    path = _link_path(mail.outbox[0])
    response = client_for(tenant_b).post(path, {"password": PASSWORD})
    assert response.status_code == 404
    assert not User.objects.filter(email="y@example.com").exists()


def test_expired_and_revoked_invitations(tenant_a, admin_a, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        body = _invite(tenant_a, admin_a, "late@example.com")
    path = _link_path(mail.outbox[0])
    with tenant_context(tenant_a):
        Invitation.objects.filter(pk=body["id"]).update(expires_at=timezone.now() - timedelta(minutes=1))
    response = client_for(tenant_a).post(path, {"password": PASSWORD})
    assert response.status_code == 410 and b"expired" in response.content
    with django_capture_on_commit_callbacks(execute=True):
        body = _invite(tenant_a, admin_a, "late@example.com")
    assert jwt_client(tenant_a, admin_a).delete(f"/api/v1/invitations/{body['id']}/").status_code == 204
    response = client_for(tenant_a).post(_link_path(mail.outbox[1]), {"password": PASSWORD})
    assert response.status_code == 404 and b"withdrawn" in response.content
    assert not User.objects.filter(email="late@example.com").exists()


def test_only_admins_invite(tenant_a):
    user = member_create(tenant_a, role=Role.USER)
    response = jwt_client(tenant_a, user).post(
        "/api/v1/invitations/", {"email": "z@example.com"}, content_type="application/json"
    )
    assert response.status_code == 403
    with tenant_context(tenant_a):
        assert not Invitation.objects.exists()


def test_change_role_and_remove(tenant_a, admin_a):
    user = member_create(tenant_a, role=Role.USER)
    client = jwt_client(tenant_a, admin_a)
    response = client.patch(f"/api/v1/members/{user.pk}/", {"role": "readonly"}, content_type="application/json")
    assert response.status_code == 200 and response.json()["role"] == "readonly"
    assert client.delete(f"/api/v1/members/{user.pk}/").status_code == 204
    assert not Membership.objects.filter(user=user, tenant=tenant_a).exists()
    assert client.delete(f"/api/v1/members/{user.pk}/").status_code == 404


def test_last_admin_cannot_demote_or_remove_self(tenant_a, admin_a):
    client = jwt_client(tenant_a, admin_a)
    response = client.patch(f"/api/v1/members/{admin_a.pk}/", {"role": "user"}, content_type="application/json")
    assert response.status_code == 409 and response.json()["code"] == "last_admin"
    assert client.delete(f"/api/v1/members/{admin_a.pk}/").status_code == 409
    assert Membership.objects.get(user=admin_a, tenant=tenant_a).role == Role.ADMIN
    # With a second admin, the first may step down.
    other = member_create(tenant_a, role=Role.ADMIN)
    assert (
        client.patch(f"/api/v1/members/{admin_a.pk}/", {"role": "user"}, content_type="application/json").status_code
        == 200
    )
    assert jwt_client(tenant_a, other).delete(f"/api/v1/members/{other.pk}/").status_code == 409


def test_members_of_other_tenant_are_404(tenant_a, admin_a, admin_b):
    response = jwt_client(tenant_a, admin_a).patch(
        f"/api/v1/members/{admin_b.pk}/", {"role": "user"}, content_type="application/json"
    )
    assert response.status_code == 404
    assert Membership.objects.get(user=admin_b).role == Role.ADMIN
    emails = [m["user"]["email"] for m in jwt_client(tenant_a, admin_a).get("/api/v1/members/").json()]
    assert admin_b.email not in emails


def test_admin_changes_are_audited(tenant_a, admin_a):
    from usage.models import AuditEntry

    user = member_create(tenant_a, role=Role.USER)
    jwt_client(tenant_a, admin_a).patch(
        f"/api/v1/members/{user.pk}/", {"role": "readonly"}, content_type="application/json"
    )
    with tenant_context(tenant_a):
        entry = AuditEntry.objects.get(action="member.role_change")
    assert entry.actor_id == admin_a.pk and entry.before == {"role": "user"} and entry.after == {"role": "readonly"}
