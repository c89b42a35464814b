"""Webhook tasks, all on the "webhooks" queue (settings.CELERY_TASK_ROUTES)."""

from __future__ import annotations

from celery import shared_task
from django.db import transaction

from core.tenancy import for_each_tenant

from . import delivery


@shared_task(name="webhooks.fanout", acks_late=True)
def webhook_fanout_task(event: dict) -> int:
    ids = delivery.deliveries_create_for_event(event)
    deliveries_enqueue(ids)
    return len(ids)


@shared_task(name="webhooks.deliver", acks_late=True)
def webhook_deliver_task(delivery_id: int) -> str:
    outcome = delivery.delivery_attempt(delivery_id)
    if outcome.retry_in is not None:
        # Explicit re-queue (not Celery's retry): the schedule is recorded on the delivery row too,
        # so webhooks.retry_due can re-queue it if this message is ever lost.
        webhook_deliver_task.apply_async((delivery_id,), countdown=outcome.retry_in)
    return outcome.status


@shared_task(name="webhooks.retry_due")
def webhooks_retry_due_task() -> int:
    total = 0
    for _schema in for_each_tenant():
        ids = delivery.deliveries_due()
        deliveries_enqueue(ids)
        total += len(ids)
    return total


def deliveries_enqueue(delivery_ids: list[int], countdown: float = 0) -> None:
    """Queue an attempt for each delivery once the transaction that created them commits."""

    def send() -> None:
        for delivery_id in delivery_ids:
            webhook_deliver_task.apply_async((delivery_id,), countdown=countdown)

    transaction.on_commit(send)
