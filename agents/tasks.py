"""Celery tasks of the agents app. Runs go to the "agents" queue (dedicated worker pool)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.db import connection
from django_tenants.utils import get_public_schema_name

from core.tenancy import for_each_tenant, in_tenant, tenant_connection

from .lifecycle import message_retention_apply
from .partitions import message_partitions_ensure
from .runtime.runner import execute_run, runs_close_orphaned


@shared_task(name="agents.run", acks_late=True)
def agent_run_task(run_id: str) -> dict:
    return execute_run(connection.schema_name, run_id)


@shared_task(name="agents.close_orphaned_runs")
def close_orphaned_runs_task() -> dict:
    """Beat, every minute: close the runs whose worker died mid-answer (partial answer saved, `error` and
    message.end on the stream, run_finished sent), in every tenant when sent from the public schema."""
    if connection.schema_name != get_public_schema_name():
        return {connection.schema_name: runs_close_orphaned(connection.schema_name)}
    closed = {}
    for schema in for_each_tenant():
        run_ids = runs_close_orphaned(schema)
        if run_ids:
            closed[schema] = run_ids
    return closed


@shared_task(name="agents.message_partitions_ensure_all")
def message_partitions_ensure_all_task() -> dict:
    """Daily: prepare the next months' message partitions in every tenant schema (and the template)."""
    created: dict[str, list[str]] = {}
    with in_tenant(settings.TENANT_BASE_SCHEMA):  # new organisations are cloned from it, partitions included
        created[settings.TENANT_BASE_SCHEMA] = message_partitions_ensure()
    for schema in for_each_tenant():
        created[schema] = message_partitions_ensure()
    return created


@shared_task(name="agents.message_retention_apply_all")
def message_retention_apply_all_task() -> dict:
    """Daily: in every organisation, drop the month partitions of messages older than its retention and the
    conversations left empty (agents.lifecycle). Months whose lock was busy are retried on the next run."""
    results = {}
    for schema in for_each_tenant():
        results[schema] = message_retention_apply(tenant=tenant_connection().tenant)
    return results
