"""Outgoing webhooks (tenant schema): endpoints tenant admins register, and every delivery."""

from django.conf import settings
from django.db import models

from core.crypto import decrypt_str


class WebhookEndpoint(models.Model):
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    event_types = models.JSONField(default=list, help_text='Event types to send; ["*"] = all.')
    # The HMAC signing key, encrypted at rest like provider keys (core.crypto); shown to admins, never in logs.
    secret_encrypted = models.TextField()
    is_active = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=300, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    first_failure_at = models.DateTimeField(null=True, blank=True)
    # Users (public schema) are referenced without a database foreign key, here and below: core/models.py says why.
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.url

    @property
    def secret(self) -> str:
        return decrypt_str(self.secret_encrypted)

    def wants(self, event_type: str) -> bool:
        return "*" in self.event_types or event_type in self.event_types


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RETRYING = "retrying", "Retrying"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class WebhookDelivery(models.Model):
    """One event to one endpoint: delivered, still retrying, or visibly failed (never silently lost)."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.CharField(max_length=64)
    event_type = models.CharField(max_length=80)
    payload = models.JSONField()
    status = models.CharField(max_length=12, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    response_code = models.IntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True)  # first 1 KB
    error = models.CharField(max_length=500, blank=True)
    duration_ms = models.IntegerField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    replay_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replays")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["endpoint", "status"], name="webhook_delivery_status")]
        constraints = [
            # A re-published event (task retry) never produces a second original delivery.
            models.UniqueConstraint(
                fields=["endpoint", "event_id"],
                condition=models.Q(replay_of__isnull=True),
                name="webhook_delivery_once_per_event",
            ),
        ]
