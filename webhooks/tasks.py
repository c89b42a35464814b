"""Webhook tasks, all on the "webhooks" queue (settings.CELERY_TASK_ROUTES)."""

from __future__ import annotations

from celery import shared_task

from core.tenancy import for_each_tenant

from . import services


@shared_task(name="webhooks.fanout", acks_late=True)
def webhook_fanout_task(event: dict) -> int:
    return len(services.deliveries_create_for_event(event))


@shared_task(name="webhooks.deliver", acks_late=True)
def webhook_deliver_task(delivery_id: int) -> str:
    outcome = services.delivery_attempt(delivery_id)
    if outcome.retry_in is not None:
        # Explicit re-queue (not Celery's retry): the schedule is recorded on the delivery row too,
        # so webhooks.retry_due can re-queue it if this message is ever lost.
        webhook_deliver_task.apply_async((delivery_id,), countdown=outcome.retry_in)
    return outcome.status


@shared_task(name="webhooks.retry_due")
def webhooks_retry_due_task() -> int:
    total = 0
    for _schema in for_each_tenant():
        total += services.deliveries_retry_due()
    return total
