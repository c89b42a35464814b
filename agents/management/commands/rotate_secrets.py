"""Re-encrypt every stored agent secret with the current (first) FIELD_ENCRYPTION_KEYS key, in every tenant."""

from agents.services import secrets_rotate
from core.audit import AuditedCommand
from core.tenancy import for_each_tenant


class Command(AuditedCommand):
    help = "Re-encrypt provider keys and custom-tool secrets with the first key of FIELD_ENCRYPTION_KEYS."

    def handle(self, *args, **options):
        total = 0
        for schema in for_each_tenant():
            count = secrets_rotate()
            total += count
            self.stdout.write(f"{schema}: {count} secrets re-encrypted")
        self.stdout.write(self.style.SUCCESS(f"done: {total} secrets"))
