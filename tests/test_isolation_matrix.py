"""The isolation matrix, generated from the tenant URL conf (config.urls).

Every API endpoint (everything under /api/v1/, whoever wrote it) x every method it implements x
{anonymous, another tenant's JWT, another tenant's API key, a read-only member on write methods, an
API key lacking the needed scope} -> refused (401 / 403), never data. Endpoints join automatically;
a view without a valid `required_scope` for one of its methods fails `test_every_endpoint_is_classified`.

Refusals happen in DRF's authentication/permission step, before any handler runs, so dummy path
arguments are enough and no state can change. `required_scope = "public"` endpoints (token issuance,
refresh, logout) take credentials in the body: they are probed with empty and foreign bodies instead.
`self_service = True` views touch only the caller's own account: read-only members may write there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from django_tenants.utils import tenant_context
from rest_framework.views import APIView

from accounts.models import Role
from accounts.tests.helpers import (
    api_key_client,
    api_key_create,
    client_for,
    jwt_client,
    jwt_pair,
    member_create,
    reset_counters,
)
from iam.policy import ALL_SCOPES, PUBLIC_SCOPE, required_scope_for

pytestmark = pytest.mark.django_db

API_PREFIX = "api/v1/"
PUBLIC = PUBLIC_SCOPE
DUMMY = {"int": "999999", "str": "x", "slug": "x", "uuid": "00000000-0000-4000-8000-000000000000", "path": "x"}
SECRET_MARKER = "isolation-matrix-secret-7f3a"


@dataclass(frozen=True)
class Endpoint:
    route: str
    view: type
    methods: tuple[str, ...]
    name: str

    def url(self) -> str:
        return "/" + self.route

    def __str__(self) -> str:
        return f"{self.route} ({self.view.__module__}.{self.view.__qualname__})"


def _route_of(pattern) -> str:
    """Regex-free route with dummy values for converters."""
    route = str(pattern.pattern)
    converters = getattr(pattern.pattern, "converters", {})
    for name, converter in converters.items():
        kind = {
            "IntConverter": "int",
            "StringConverter": "str",
            "SlugConverter": "slug",
            "UUIDConverter": "uuid",
            "PathConverter": "path",
        }.get(type(converter).__name__, "str")
        route = route.replace(f"<{_conv_prefix(route, name)}{name}>", DUMMY[kind])
    return route.lstrip("^").rstrip("$")


def _conv_prefix(route: str, name: str) -> str:
    start = route.find(f"{name}>")
    open_at = route.rfind("<", 0, start)
    return route[open_at + 1 : start]


def _walk(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + _route_of(pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + _route_of(pattern), pattern


def api_endpoints() -> list[Endpoint]:
    endpoints = []
    for route, pattern in _walk(get_resolver("config.urls").url_patterns):
        if not route.startswith(API_PREFIX):
            continue
        callback = pattern.callback
        view = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
        actions = getattr(callback, "actions", None)
        if actions:  # ViewSet routed by a DRF router
            methods = tuple(m.upper() for m in actions)
        elif view is not None:
            methods = tuple(
                m.upper() for m in view.http_method_names if m not in ("options", "head") and hasattr(view, m)
            )
        else:
            methods = ("GET",)
        endpoints.append(Endpoint(route=route, view=view or callback, methods=methods, name=pattern.name or ""))
    return endpoints


ENDPOINTS = api_endpoints()


def _scope(endpoint: Endpoint, method: str) -> str | None:
    return required_scope_for(endpoint.view, method)


def _call(client, endpoint: Endpoint, method: str):
    fn = getattr(client, method.lower())
    if method in ("GET", "DELETE"):
        return fn(endpoint.url())
    return fn(endpoint.url(), data=json.dumps({}), content_type="application/json")


def _check(results: list[str], endpoint: Endpoint, method: str, response, allowed: set[int], who: str) -> None:
    body = b"" if getattr(response, "streaming", False) else response.content
    if response.status_code not in allowed or SECRET_MARKER.encode() in body:
        results.append(f"{who}: {method} {endpoint} -> {response.status_code} {body[:200]!r}")


def _protected(endpoint: Endpoint, method: str) -> bool:
    return _scope(endpoint, method) in ALL_SCOPES


@pytest.fixture(autouse=True)
def _fresh_counters():
    reset_counters()  # a rate-limit 429 left by an earlier test would hide what the auth layer answers
    yield


@pytest.fixture
def secret_in_a(tenant_a, admin_a):
    """Something worth stealing in tenant A, named with a marker we look for in every response."""
    from knowledge.models import KnowledgeBase

    with tenant_context(tenant_a):
        return KnowledgeBase.objects.create(name=SECRET_MARKER, owner=admin_a, org_access="viewer")


def test_matrix_found_the_endpoints():
    routes = {e.route for e in ENDPOINTS}
    # A sanity floor: our own endpoints are discovered (so are everyone else's, by the same walk).
    assert {"api/v1/me/", "api/v1/teams/", "api/v1/api-keys/", "api/v1/shares/", "api/v1/schema/"} <= routes


def test_every_endpoint_is_classified():
    problems = []
    for endpoint in ENDPOINTS:
        if not (isinstance(endpoint.view, type) and issubclass(endpoint.view, APIView)):
            problems.append(f"{endpoint}: API endpoints must be DRF views (so auth and scopes apply)")
            continue
        for method in endpoint.methods:
            scope = _scope(endpoint, method)
            if scope not in ALL_SCOPES and scope != PUBLIC:
                problems.append(f"{endpoint} {method}: required_scope is {scope!r}")
    assert not problems, "Unclassified API endpoints:\n" + "\n".join(problems)


def test_anonymous_is_refused_everywhere(tenant_a, secret_in_a):
    failures: list[str] = []
    client = client_for(tenant_a)
    for endpoint in ENDPOINTS:
        for method in endpoint.methods:
            allowed = {401} if _protected(endpoint, method) else {400, 401, 404, 405}
            _check(failures, endpoint, method, _call(client, endpoint, method), allowed, "anonymous")
    assert not failures, "\n".join(failures)


def test_other_tenants_jwt_is_refused_everywhere(tenant_a, tenant_b, admin_b, secret_in_a):
    failures: list[str] = []
    client = jwt_client(tenant_b, admin_b, on=tenant_a)
    for endpoint in ENDPOINTS:
        for method in endpoint.methods:
            allowed = {401} if _protected(endpoint, method) else {400, 401, 404, 405}
            _check(failures, endpoint, method, _call(client, endpoint, method), allowed, "tenant B JWT")
    assert not failures, "\n".join(failures)
    # Public endpoints with B's refresh token in the body refuse it on A as well.
    refresh = jwt_pair(tenant_b, admin_b)["refresh"]
    for path in ("/api/v1/auth/token/refresh/", "/api/v1/auth/logout/"):
        response = client_for(tenant_a).post(path, {"refresh": refresh}, content_type="application/json")
        assert response.status_code == 401, path


def test_other_tenants_api_key_is_refused_everywhere(tenant_a, tenant_b, admin_b, secret_in_a):
    failures: list[str] = []
    _, raw = api_key_create(tenant_b, admin_b)
    client = api_key_client(tenant_b, raw, on=tenant_a)
    for endpoint in ENDPOINTS:
        for method in endpoint.methods:
            allowed = {401} if _protected(endpoint, method) else {400, 401, 404, 405}
            _check(failures, endpoint, method, _call(client, endpoint, method), allowed, "tenant B API key")
    assert not failures, "\n".join(failures)


def test_readonly_member_cannot_write_anywhere(tenant_a, secret_in_a):
    failures: list[str] = []
    reader = member_create(tenant_a, role=Role.READONLY)
    client = jwt_client(tenant_a, reader)
    checked = 0
    for endpoint in ENDPOINTS:
        if getattr(endpoint.view, "self_service", False):
            continue
        for method in endpoint.methods:
            if _scope(endpoint, method) in ("write", "admin"):
                checked += 1
                _check(failures, endpoint, method, _call(client, endpoint, method), {403}, "readonly member")
    assert checked > 10
    assert not failures, "\n".join(failures)


def test_api_key_without_the_scope_is_refused_everywhere(tenant_a, admin_a, secret_in_a):
    failures: list[str] = []
    clients = {}
    for scope in ALL_SCOPES:
        others = sorted(ALL_SCOPES - {scope, "admin"})
        _, raw = api_key_create(tenant_a, admin_a, scopes=others)
        clients[scope] = api_key_client(tenant_a, raw)
    for endpoint in ENDPOINTS:
        for method in endpoint.methods:
            scope = _scope(endpoint, method)
            if scope not in ALL_SCOPES:
                continue
            response = _call(clients[scope], endpoint, method)
            _check(failures, endpoint, method, response, {403}, f"API key without {scope!r}")
    assert not failures, "\n".join(failures)


# `self_service` exempts a view from the read-only rule; it is only for the caller's own account.
SELF_SERVICE_ALLOWED = {
    "accounts.apis.MeApi",
    "accounts.apis.MySessionListApi",
    "accounts.apis.MySessionDetailApi",
    "accounts.apis.MyTokensRevokeApi",
    "accounts.apis.MyExportApi",
    "accounts.apis.AccountDeleteApi",
    "iam.apis.ApiKeyListApi",
    "iam.apis.ApiKeyDetailApi",
}


def test_self_service_exemption_is_not_spread():
    found = {f"{e.view.__module__}.{e.view.__qualname__}" for e in ENDPOINTS if getattr(e.view, "self_service", False)}
    assert found <= SELF_SERVICE_ALLOWED, f"Unreviewed self_service views: {sorted(found - SELF_SERVICE_ALLOWED)}"
