import uuid

import pytest
from django.test import Client
from django_tenants.utils import tenant_context

from core.tasks import context_probe_task, context_probe_wait


@pytest.mark.e2e
@pytest.mark.django_db
def test_task_runs_in_the_schema_of_the_tenant_that_queued_it(celery_worker_process, tenant_a, tenant_b):
    key_a, key_b = f"probe:{uuid.uuid4().hex}", f"probe:{uuid.uuid4().hex}"
    with tenant_context(tenant_a):
        context_probe_task.delay(key_a)
    with tenant_context(tenant_b):
        context_probe_task.delay(key_b)
    assert context_probe_wait(key_a) == {"schema": "t_acme", "tenant": "acme", "request_id": "-"}
    assert context_probe_wait(key_b) == {"schema": "t_globex", "tenant": "globex", "request_id": "-"}


@pytest.mark.e2e
@pytest.mark.django_db
def test_readyz_reports_database_redis_and_worker(celery_worker_process):
    response = Client(HTTP_HOST="localhost").get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["checks"]["database"]["pgvector"].startswith("0.8")
    assert body["checks"]["redis"]["ok"] is True
    assert body["checks"]["celery"]["workers"]
