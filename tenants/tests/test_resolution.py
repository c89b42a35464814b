import pytest
from django.test import Client

from tenants.services import tenant_create


@pytest.mark.django_db
def test_http_request_resolves_tenant_from_host(client_a, admin_a):
    client_a.force_login(admin_a)
    response = client_a.get("/api/v1/me/")
    assert response.status_code == 200
    # Subset: the profile adds preferences to this body.
    expected = {"email": "admin@acme.test", "display_name": "", "tenant": "acme", "role": "admin"}
    assert response.json().items() >= expected.items()


@pytest.mark.django_db
def test_user_without_membership_gets_nothing(client_b, admin_a):
    client_b.force_login(admin_a)  # acme's admin on globex's host
    api = client_b.get("/api/v1/me/")
    assert api.status_code == 403
    assert "not a member" in api.json()["detail"]
    page = client_b.get("/")
    assert page.status_code == 403
    assert b"not a member" in page.content


@pytest.mark.django_db
def test_unknown_host_is_refused_with_a_clear_message():
    client = Client(HTTP_HOST="nosuchorg.localhost")
    api = client.get("/api/v1/me/")
    assert api.status_code == 404
    assert api.json()["code"] == "unknown_tenant"
    page = client.get("/")
    assert page.status_code == 404
    assert b"Organisation not found" in page.content


@pytest.mark.django_db
def test_dashboard_requires_login_and_shows_role(client_a, admin_a):
    anonymous = client_a.get("/")
    assert anonymous.status_code == 302
    assert "/accounts/login/" in anonymous["Location"]
    client_a.force_login(admin_a)
    page = client_a.get("/")
    assert page.status_code == 200
    assert b"Acme Corp" in page.content


@pytest.mark.django_db
def test_login_page_is_served_on_tenant_host(client_a):
    response = client_a.get("/accounts/login/")
    assert response.status_code == 200
    assert b'name="password"' in response.content


@pytest.mark.django_db
def test_public_domain_serves_signup_not_tenant_api(public_client):
    assert public_client.get("/signup/").status_code == 200
    assert public_client.get("/api/v1/me/").status_code == 404


@pytest.mark.django_db
def test_probes_answer_on_any_host():
    assert Client(HTTP_HOST="ghost.localhost").get("/healthz").json() == {"status": "ok"}
    assert Client(HTTP_HOST="localhost").get("/healthz").json() == {"status": "ok"}


@pytest.mark.django_db
def test_new_tenant_is_reachable_immediately(admin_a):
    tenant_create(name="Fresh", slug="fresh", owner=admin_a)
    client = Client(HTTP_HOST="fresh.localhost")
    client.force_login(admin_a)
    assert client.get("/api/v1/me/").json()["tenant"] == "fresh"


@pytest.mark.django_db
def test_host_cache_serves_repeat_requests_without_a_lookup_and_forgets_changes(
    client_a, admin_a, tenant_a, settings, django_assert_num_queries
):
    from tenants.models import Domain
    from tenants.selectors import tenant_for_host, tenant_host_cache_clear

    settings.TENANT_HOST_CACHE_SECONDS = 60
    tenant_host_cache_clear()
    assert tenant_for_host("acme.localhost") == tenant_a  # looked up once...
    with django_assert_num_queries(0):
        assert tenant_for_host("acme.localhost") == tenant_a  # ...then served from the cache
        assert client_a.get("/healthz").status_code == 200
    assert tenant_for_host("nosuchorg.localhost") is None  # unknown hosts are never cached
    Domain.objects.create(domain="nosuchorg.localhost", tenant=tenant_a, is_primary=False)
    assert tenant_for_host("nosuchorg.localhost") == tenant_a
    Domain.objects.filter(domain="acme.localhost").delete()  # a queryset delete sends post_delete per row
    assert tenant_for_host("acme.localhost") is None  # the local change cleared the cache at once
    tenant_host_cache_clear()


@pytest.mark.django_db
def test_a_host_in_mixed_case_resolves_on_http_as_on_websocket(tenant_a, admin_a):
    from asgiref.sync import async_to_sync
    from asgiref.testing import ApplicationCommunicator

    from conftest import host_of
    from tenants.middleware import TenantWebsocketMiddleware

    mixed = host_of(tenant_a).upper() + ":8000"  # ACME.LOCALHOST:8000
    client = Client(HTTP_HOST=mixed)
    client.force_login(admin_a)
    response = client.get("/api/v1/me/")
    assert response.status_code == 200, response.content
    assert response.json()["tenant"] == "acme"

    seen = []

    async def consumer(scope, receive, send):
        seen.append(scope["tenant"].schema_name)
        await send({"type": "websocket.accept"})

    async def connect():
        scope = {"type": "websocket", "path": "/ws/x/", "headers": [(b"host", mixed.encode())]}
        comm = ApplicationCommunicator(TenantWebsocketMiddleware(consumer), scope)
        await comm.send_input({"type": "websocket.connect"})
        return await comm.receive_output(5)

    assert async_to_sync(connect)() == {"type": "websocket.accept"}
    assert seen == [tenant_a.schema_name]
