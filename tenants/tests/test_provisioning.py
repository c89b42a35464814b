import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django_tenants.utils import schema_exists, tenant_context

from accounts.models import Membership, Role, User
from conftest import PASSWORD
from core.errors import Conflict, InvalidInput, ProvisioningFailed
from tenants.models import Domain, Tenant
from tenants.services import tenant_create, tenant_delete


@pytest.mark.django_db
def test_tenant_create_clones_schema_domain_and_admin_membership():
    tenant = tenant_create(name="Initech", slug="initech", owner_email="boss@initech.test", owner_password=PASSWORD)

    assert tenant.schema_name == "t_initech"
    assert schema_exists("t_initech")
    assert Domain.objects.get(tenant=tenant).domain == "initech.localhost"
    owner = User.objects.get(email="boss@initech.test")
    assert Membership.objects.get(user=owner, tenant=tenant).role == Role.ADMIN
    # The clone carries the tenant apps' tables and their migration history.
    with tenant_context(tenant), connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM django_migrations WHERE app = 'contenttypes'")
        assert cursor.fetchone()[0] > 0


@pytest.mark.django_db
@pytest.mark.parametrize("slug", ["www", "api", "admin", "public"])
def test_reserved_slugs_are_refused_with_a_clear_message(slug):
    with pytest.raises(InvalidInput, match="reserved"):
        tenant_create(name="X", slug=slug, owner_email="x@x.test", owner_password=PASSWORD)
    assert not User.objects.filter(email="x@x.test").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("slug", ["a", "-abc", "abc-", "UPPER case", "a_b", "x" * 41, "ab--cd"])
def test_malformed_slugs_are_refused(slug):
    with pytest.raises(InvalidInput):
        tenant_create(name="X", slug=slug, owner_email="x@x.test", owner_password=PASSWORD)


@pytest.mark.django_db
def test_taken_slug_is_a_conflict(tenant_a):
    with pytest.raises(Conflict, match="already taken"):
        tenant_create(name="Acme 2", slug="acme", owner_email="new@acme2.test", owner_password=PASSWORD)
    assert not User.objects.filter(email="new@acme2.test").exists()


@pytest.mark.django_db
def test_weak_password_and_invalid_email_are_refused():
    with pytest.raises(InvalidInput) as weak:
        tenant_create(name="W", slug="weakco", owner_email="w@weak.test", owner_password="123")
    assert weak.value.field == "password"
    with pytest.raises(InvalidInput) as bad_email:
        tenant_create(name="W", slug="weakco", owner_email="not-an-email", owner_password=PASSWORD)
    assert bad_email.value.field == "email"
    assert not schema_exists("t_weakco")
    assert not Tenant.objects.filter(slug="weakco").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("failing_step", ["domain", "membership"])
def test_failed_provisioning_leaves_no_schema_rows_or_user(monkeypatch, failing_step):
    def boom(*args, **kwargs):
        raise RuntimeError("simulated failure")

    target = Domain.objects if failing_step == "domain" else Membership.objects
    monkeypatch.setattr(type(target), "create", boom)

    with pytest.raises(ProvisioningFailed, match="Nothing was saved"):
        tenant_create(name="Doomed", slug="doomed", owner_email="d@doomed.test", owner_password=PASSWORD)

    assert not schema_exists("t_doomed")
    assert not Tenant.objects.filter(slug="doomed").exists()
    assert not Domain.objects.filter(domain__startswith="doomed.").exists()
    assert not User.objects.filter(email="d@doomed.test").exists()


@pytest.mark.django_db
def test_one_user_can_belong_to_several_tenants(admin_a, tenant_a):
    second = tenant_create(name="Acme Labs", slug="acme-labs", owner=admin_a)
    assert set(Membership.objects.filter(user=admin_a).values_list("tenant__slug", flat=True)) == {"acme", "acme-labs"}
    assert second.schema_name == "t_acme_labs"


@pytest.mark.django_db
def test_tenant_delete_drops_schema_rows_and_stored_files(admin_a, django_capture_on_commit_callbacks):
    from knowledge.storage import knowledge_storage, storage_save

    tenant = tenant_create(name="Temp", slug="temp-org", owner=admin_a)
    assert schema_exists("t_temp_org")
    with tenant_context(tenant):
        stored = storage_save("tenant/t_temp_org/kb/1/abc/doc.md", b"# hello")
    with tenant_context(Tenant.objects.get(slug="acme")):
        neighbour = storage_save("tenant/t_acme/kb/1/keep/doc.md", b"# keep")
    assert knowledge_storage().exists(stored)

    with django_capture_on_commit_callbacks(execute=True):
        tenant_delete(tenant=tenant)

    assert not schema_exists("t_temp_org")
    assert not knowledge_storage().exists(stored)
    assert knowledge_storage().exists(neighbour)  # other tenants' files are untouched
    knowledge_storage().delete(neighbour)
    assert not Domain.objects.filter(domain="temp-org.localhost").exists()
    assert not Membership.objects.filter(tenant_id=tenant.pk).exists()
    assert User.objects.filter(pk=admin_a.pk).exists()  # people outlive organisations


@pytest.mark.django_db
def test_create_tenant_command_uses_the_same_service(capsys):
    call_command("create_tenant", name="Cli Co", slug="cli-co", owner_email="cli@co.test", owner_password=PASSWORD)
    assert "Created cli-co" in capsys.readouterr().out
    assert Tenant.objects.filter(slug="cli-co", schema_name="t_cli_co").exists()
    with pytest.raises(CommandError, match="reserved"):
        call_command("create_tenant", name="W", slug="www", owner_email="w@w.test", owner_password=PASSWORD)


@pytest.mark.django_db
def test_signup_api_creates_tenant_and_reports_errors_as_json(public_client):
    ok = public_client.post(
        "/api/v1/tenants/",
        {"name": "Api Co", "slug": "api-co", "owner_email": "owner@api.test", "owner_password": PASSWORD},
        content_type="application/json",
    )
    assert ok.status_code == 201, ok.content
    assert ok.json()["url"].startswith("http://api-co.localhost")

    taken = public_client.post(
        "/api/v1/tenants/",
        {"name": "Api Co", "slug": "api-co", "owner_email": "o2@api.test", "owner_password": PASSWORD},
        content_type="application/json",
    )
    assert taken.status_code == 409
    assert "already taken" in taken.json()["detail"]

    reserved = public_client.post(
        "/api/v1/tenants/",
        {"name": "W", "slug": "admin", "owner_email": "o3@api.test", "owner_password": PASSWORD},
        content_type="application/json",
    )
    assert reserved.status_code == 400
    assert reserved.json()["field"] == "slug"


@pytest.mark.django_db
def test_signup_page_shows_form_errors_and_creates_tenant(public_client):
    page = public_client.get("/signup/")
    assert page.status_code == 200
    assert b'for="id_slug"' in page.content

    bad = public_client.post("/signup/", {"name": "Org", "slug": "www", "email": "a@b.test", "password": PASSWORD})
    assert bad.status_code == 400
    assert b"reserved" in bad.content

    weak = public_client.post("/signup/", {"name": "Org", "slug": "pageco", "email": "a@b.test", "password": "short"})
    assert weak.status_code == 400
    assert not Tenant.objects.filter(slug="pageco").exists()

    good = public_client.post(
        "/signup/", {"name": "Page Co", "slug": "pageco", "email": "p@page.test", "password": PASSWORD}
    )
    assert good.status_code == 302
    done = public_client.get(good["Location"])
    assert b"pageco.localhost" in done.content
