import pytest
from django.test import Client
from django_tenants.utils import tenant_context

from core.tasks import tenant_probe_task


@pytest.mark.e2e
@pytest.mark.django_db
def test_task_runs_in_the_schema_of_the_tenant_that_queued_it(celery_worker_process, tenant_a, tenant_b):
    with tenant_context(tenant_a):
        from_a = tenant_probe_task.delay()
    with tenant_context(tenant_b):
        from_b = tenant_probe_task.delay()
    assert from_a.get(timeout=30) == {"schema": "t_acme", "tenant": "acme"}
    assert from_b.get(timeout=30) == {"schema": "t_globex", "tenant": "globex"}


@pytest.mark.e2e
@pytest.mark.django_db
def test_readyz_reports_database_redis_and_worker(celery_worker_process):
    response = Client(HTTP_HOST="localhost").get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["checks"]["database"]["pgvector"].startswith("0.8")
    assert body["checks"]["redis"]["ok"] is True
    assert body["checks"]["celery"]["workers"]
