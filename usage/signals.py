"""Any change to a sub-limit moves the quota-limits epoch, so every process reads it at its next check."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from core.quotas import limits_cache_clear

from .models import QuotaSubLimit


@receiver([post_save, post_delete], sender=QuotaSubLimit)
def _sublimit_changed(**kwargs) -> None:
    limits_cache_clear()
