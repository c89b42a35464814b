"""Celery tasks of the agents app. Runs go to the "agents" queue (dedicated worker pool)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.db import connection

from core.tenancy import for_each_tenant, in_tenant

from .partitions import message_partitions_ensure
from .runtime.runner import execute_run


@shared_task(name="agents.run", acks_late=True)
def agent_run_task(run_id: str) -> dict:
    return execute_run(connection.schema_name, run_id)


@shared_task(name="agents.message_partitions_ensure_all")
def message_partitions_ensure_all_task() -> dict:
    """Daily: prepare the next months' message partitions in every tenant schema (and the template)."""
    created: dict[str, list[str]] = {}
    with in_tenant(settings.TENANT_BASE_SCHEMA):  # new organisations are cloned from it, partitions included
        created[settings.TENANT_BASE_SCHEMA] = message_partitions_ensure()
    for schema in for_each_tenant():
        created[schema] = message_partitions_ensure()
    return created
