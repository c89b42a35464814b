"""Changes that can alter what an API key may do bump the auth epochs of the tenants concerned, so every process
drops its cached verifications (iam.keys.api_key_authenticate) at the next request."""

from django.conf import settings
from django.db import connection
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django_tenants.utils import get_tenant_model

from accounts.models import Membership
from core.epochs import epoch_bump

from .members import auth_epoch
from .models import ApiKey


@receiver([post_save, post_delete], sender=ApiKey)
def _api_key_changed(**kwargs) -> None:
    # Keys live in their tenant's schema. Bulk updates send no signal: membership_remove revokes keys with one, in
    # the transaction that deletes the membership (which bumps the epoch below).
    epoch_bump(auth_epoch(connection.schema_name))


@receiver([post_save, post_delete], sender=Membership)
def _membership_changed(instance: Membership, **kwargs) -> None:
    schema = get_tenant_model().objects.filter(pk=instance.tenant_id).values_list("schema_name", flat=True).first()
    if schema:
        epoch_bump(auth_epoch(schema))


@receiver([post_save, post_delete], sender=settings.AUTH_USER_MODEL)
def _user_changed(instance, update_fields=None, **kwargs) -> None:
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return  # a login changes nothing an API key relies on
    schemas = get_tenant_model().objects.filter(memberships__user_id=instance.pk).values_list("schema_name", flat=True)
    for schema in schemas:
        epoch_bump(auth_epoch(schema))
