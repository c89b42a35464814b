"""Backups' answers to other apps' signals."""

from typing import Any

from django.dispatch import receiver
from django_celery_beat.models import PeriodicTask

from tenants.signals import tenant_schema_dropped

from .services import periodic_task_name


@receiver(tenant_schema_dropped)
def _tenant_schedule_delete(*, schema: str, **kwargs: Any) -> None:
    """A deleted organisation's rows (backups, schedule) went with it; its beat entry lives in another app's table."""
    PeriodicTask.objects.filter(name=periodic_task_name(schema)).delete()
