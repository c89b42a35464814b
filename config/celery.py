"""Celery app. Tenant-aware: a task queued inside a tenant runs inside that tenant's schema
(tenant-schemas-celery puts the schema in the message and switches in task_prerun)."""

import os

from celery.signals import task_postrun, task_prerun
from tenant_schemas_celery.app import CeleryApp

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

app = CeleryApp("agentry")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
def _log_context_in(sender=None, **kwargs):
    from django.db import connection

    from core.context import current_request_id, current_tenant

    current_tenant.set(getattr(connection, "schema_name", "-"))
    headers = getattr(sender.request, "headers", None) or {}
    current_request_id.set(headers.get("request_id", "-") if isinstance(headers, dict) else "-")


@task_postrun.connect
def _log_context_out(**kwargs):
    from core.context import current_request_id, current_tenant

    current_tenant.set("-")
    current_request_id.set("-")
