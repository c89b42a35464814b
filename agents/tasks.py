"""Celery tasks of the agents app. Runs go to the "agents" queue (dedicated worker pool)."""

from __future__ import annotations

from celery import shared_task
from django.db import connection


@shared_task(name="agents.run", acks_late=True)
def agent_run_task(run_id: str) -> dict:
    from .runtime.runner import execute_run

    return execute_run(connection.schema_name, run_id)


@shared_task(name="agents.message_partitions_ensure_all")
def message_partitions_ensure_all_task() -> dict:
    """Daily: prepare the next months' message partitions in every tenant schema (and the template)."""
    from django.conf import settings
    from django_tenants.utils import get_tenant_model, schema_context

    from .partitions import message_partitions_ensure

    created: dict[str, list[str]] = {}
    schemas = [
        settings.TENANT_BASE_SCHEMA,
        *get_tenant_model().objects.exclude(schema_name="public").values_list("schema_name", flat=True),
    ]
    for schema in schemas:
        with schema_context(schema):
            created[schema] = message_partitions_ensure()
    return created
