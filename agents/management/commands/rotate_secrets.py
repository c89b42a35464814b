"""Re-encrypt every stored agent secret with the current (first) FIELD_ENCRYPTION_KEYS key, in every tenant."""

from django.core.management.base import BaseCommand
from django_tenants.utils import get_tenant_model, schema_context

from agents.services import secrets_rotate


class Command(BaseCommand):
    help = "Re-encrypt provider keys and custom-tool secrets with the first key of FIELD_ENCRYPTION_KEYS."

    def handle(self, *args, **options):
        total = 0
        for schema in get_tenant_model().objects.exclude(schema_name="public").values_list("schema_name", flat=True):
            with schema_context(schema):
                count = secrets_rotate()
            total += count
            self.stdout.write(f"{schema}: {count} secrets re-encrypted")
        self.stdout.write(self.style.SUCCESS(f"done: {total} secrets"))
