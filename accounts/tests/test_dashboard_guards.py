"""The dashboard decorators/mixins apply the same role rules as the API (HTML 403 page, login redirect)."""

from __future__ import annotations

import pytest
from django.http import HttpResponse
from django.test import RequestFactory
from django.views import View

from accounts.models import Role
from conftest import host_of
from iam.policy import AdminRequiredMixin, admin_required, member_required, write_required

from .helpers import member_create

pytestmark = pytest.mark.django_db


def _ok(request):
    return HttpResponse(f"ok {request.principal.role}")


class _AdminPage(AdminRequiredMixin, View):
    def get(self, request):
        return HttpResponse("admin page")


def _request(tenant, user):
    from django.contrib.auth.models import AnonymousUser

    request = RequestFactory(HTTP_HOST=host_of(tenant)).get("/x/")
    request.tenant = tenant
    request.user = user or AnonymousUser()
    request.session = {}
    return request


@pytest.mark.parametrize(
    ("guard", "role", "status"),
    [
        (member_required, Role.READONLY, 200),
        (write_required, Role.READONLY, 403),
        (write_required, Role.USER, 200),
        (admin_required, Role.USER, 403),
        (admin_required, Role.ADMIN, 200),
    ],
)
def test_guards(tenant_a, guard, role, status):
    user = member_create(tenant_a, role=role)
    response = guard(_ok)(_request(tenant_a, user))
    assert response.status_code == status
    if status == 403:
        assert b"Not allowed" in response.content


def test_guards_redirect_anonymous_and_refuse_strangers(tenant_a, admin_b):
    assert member_required(_ok)(_request(tenant_a, None)).status_code == 302
    assert member_required(_ok)(_request(tenant_a, admin_b)).status_code == 403


def test_mixin(tenant_a, admin_a):
    assert _AdminPage.as_view()(_request(tenant_a, admin_a)).status_code == 200
    assert _AdminPage.as_view()(_request(tenant_a, member_create(tenant_a))).status_code == 403
