"""JWT: issue, tenant binding, rotation with blacklist, logout, and bad tokens."""

from __future__ import annotations

import time
from datetime import timedelta

import jwt
import pytest
from django.conf import settings
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import Role
from conftest import PASSWORD

from .helpers import client_for, jwt_client, jwt_pair, member_create

pytestmark = pytest.mark.django_db


def test_token_pair_works_on_its_tenant(tenant_a, admin_a):
    response = jwt_client(tenant_a, admin_a).get("/api/v1/me/")
    assert response.status_code == 200
    assert response.json()["email"] == admin_a.email
    assert response.json()["tenant"] == "acme"


def test_token_from_tenant_a_is_refused_on_tenant_b(tenant_a, tenant_b, admin_a):
    # Even when the user is a member of both organisations, the token is bound to where it was issued.
    from accounts.models import Membership

    Membership.objects.create(user=admin_a, tenant=tenant_b, role=Role.ADMIN)
    response = jwt_client(tenant_a, admin_a, on=tenant_b).get("/api/v1/me/")
    assert response.status_code == 401
    assert response.json()["code"] == "token_wrong_tenant"


def test_non_member_gets_no_token(tenant_b, admin_a):
    response = client_for(tenant_b).post(
        "/api/v1/auth/token/", {"email": admin_a.email, "password": PASSWORD}, content_type="application/json"
    )
    assert response.status_code == 401
    assert "access" not in response.json()


def test_wrong_password_is_401_and_throttled(tenant_a, admin_a):
    client = client_for(tenant_a)
    codes = [
        client.post(
            "/api/v1/auth/token/", {"email": admin_a.email, "password": "nope"}, content_type="application/json"
        ).status_code
        for _ in range(6)
    ]
    assert codes[:5] == [401] * 5
    assert codes[5] == 429
    # Even the right password is refused while throttled.
    response = client.post(
        "/api/v1/auth/token/", {"email": admin_a.email, "password": PASSWORD}, content_type="application/json"
    )
    assert response.status_code == 429


def test_expired_token_is_401(tenant_a, admin_a):
    token = AccessToken.for_user(admin_a)
    token["tenant"] = tenant_a.schema_name
    token.set_exp(lifetime=-timedelta(seconds=1))
    response = client_for(tenant_a, HTTP_AUTHORIZATION=f"Bearer {token}").get("/api/v1/me/")
    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"


def test_a_token_accepted_before_is_refused_once_it_expires(tenant_a, admin_a):
    """Verified tokens are remembered per process (iam.authentication); their expiry is still checked on every use."""
    token = AccessToken.for_user(admin_a)
    token["tenant"] = tenant_a.schema_name
    token.set_exp(lifetime=timedelta(seconds=5))
    client = client_for(tenant_a, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.get("/api/v1/me/").status_code == 200
    time.sleep(5.5)
    response = client.get("/api/v1/me/")
    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"


def test_tampered_token_is_401(tenant_a, admin_a):
    access = jwt_pair(tenant_a, admin_a)["access"]
    claims = jwt.decode(access, options={"verify_signature": False})
    claims["user_id"] = str(int(claims["user_id"]) + 1)
    forged = jwt.encode(claims, "not-the-key", algorithm="HS256")
    response = client_for(tenant_a, HTTP_AUTHORIZATION=f"Bearer {forged}").get("/api/v1/me/")
    assert response.status_code == 401
    # Re-tenanting a token with the right key is impossible without the key; with a wrong tenant claim
    # signed by the real key (simulating a token from B) it is refused as well.
    claims["tenant"] = "t_globex"
    claims["user_id"] = str(admin_a.pk)
    resigned = jwt.encode(claims, settings.SECRET_KEY, algorithm="HS256")
    response = client_for(tenant_a, HTTP_AUTHORIZATION=f"Bearer {resigned}").get("/api/v1/me/")
    assert response.status_code == 401


def test_refresh_rotates_and_blacklists_old(tenant_a, admin_a):
    pair = jwt_pair(tenant_a, admin_a)
    client = client_for(tenant_a)
    first = client.post("/api/v1/auth/token/refresh/", {"refresh": pair["refresh"]}, content_type="application/json")
    assert first.status_code == 200
    new = first.json()
    assert new["refresh"] != pair["refresh"]
    again = client.post("/api/v1/auth/token/refresh/", {"refresh": pair["refresh"]}, content_type="application/json")
    assert again.status_code == 401
    assert again.json()["code"] == "token_not_valid"
    assert client_for(tenant_a, HTTP_AUTHORIZATION=f"Bearer {new['access']}").get("/api/v1/me/").status_code == 200


def test_refresh_token_of_other_tenant_is_refused(tenant_a, tenant_b, admin_a):
    pair = jwt_pair(tenant_a, admin_a)
    response = client_for(tenant_b).post(
        "/api/v1/auth/token/refresh/", {"refresh": pair["refresh"]}, content_type="application/json"
    )
    assert response.status_code == 401
    # ... and nothing was blacklisted: the token still works where it belongs.
    ok = client_for(tenant_a).post(
        "/api/v1/auth/token/refresh/", {"refresh": pair["refresh"]}, content_type="application/json"
    )
    assert ok.status_code == 200


def test_logout_blacklists_refresh(tenant_a, admin_a):
    pair = jwt_pair(tenant_a, admin_a)
    client = client_for(tenant_a)
    assert (
        client.post("/api/v1/auth/logout/", {"refresh": pair["refresh"]}, content_type="application/json").status_code
        == 204
    )
    response = client.post("/api/v1/auth/token/refresh/", {"refresh": pair["refresh"]}, content_type="application/json")
    assert response.status_code == 401


def test_logout_ends_the_session_its_access_token_included_and_only_that_session(tenant_a, admin_a):
    session, other = jwt_pair(tenant_a, admin_a), jwt_pair(tenant_a, admin_a)
    me = client_for(tenant_a, HTTP_AUTHORIZATION=f"Bearer {session['access']}")
    assert me.get("/api/v1/me/").status_code == 200
    client_for(tenant_a).post("/api/v1/auth/logout/", {"refresh": session["refresh"]}, content_type="application/json")
    response = me.get("/api/v1/me/")
    assert response.status_code == 401 and response.json()["code"] == "token_revoked"  # not 15 more minutes
    other_client = client_for(tenant_a, HTTP_AUTHORIZATION=f"Bearer {other['access']}")
    assert other_client.get("/api/v1/me/").status_code == 200  # another device stays signed in


def test_a_rotated_session_is_still_one_session_for_logout(tenant_a, admin_a):
    first = jwt_pair(tenant_a, admin_a)
    rotated = (
        client_for(tenant_a)
        .post("/api/v1/auth/token/refresh/", {"refresh": first["refresh"]}, content_type="application/json")
        .json()
    )
    client_for(tenant_a).post("/api/v1/auth/logout/", {"refresh": rotated["refresh"]}, content_type="application/json")
    for access in (first["access"], rotated["access"]):
        assert client_for(tenant_a, HTTP_AUTHORIZATION=f"Bearer {access}").get("/api/v1/me/").status_code == 401


def test_logout_with_garbage_is_401(tenant_a):
    response = client_for(tenant_a).post("/api/v1/auth/logout/", {"refresh": "x.y.z"}, content_type="application/json")
    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"


def test_removed_member_token_stops_working(tenant_a):
    user = member_create(tenant_a, role=Role.USER)
    client = jwt_client(tenant_a, user)
    assert client.get("/api/v1/me/").status_code == 200
    user.memberships.all().delete()
    assert client.get("/api/v1/me/").status_code == 403


def test_revoke_all_tokens(tenant_a, admin_a):
    pair = jwt_pair(tenant_a, admin_a)
    client = client_for(tenant_a, HTTP_AUTHORIZATION=f"Bearer {pair['access']}")
    assert client.post("/api/v1/me/tokens/revoke/").json()["revoked"] >= 1
    response = client_for(tenant_a).post(
        "/api/v1/auth/token/refresh/", {"refresh": pair["refresh"]}, content_type="application/json"
    )
    assert response.status_code == 401
    assert client.get("/api/v1/me/").status_code == 401  # the access tokens issued so far too
