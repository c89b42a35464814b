"""Re-encrypt every stored secret with the current (first) FIELD_ENCRYPTION_KEYS key, in every tenant."""

from typing import Any

from core.audit import AuditedCommand
from core.crypto import secrets_rotate_all
from core.tenancy import for_each_tenant


class Command(AuditedCommand):
    help = (
        "Re-encrypt stored secrets (provider keys, custom-tool secrets, webhook signing secrets) with the first "
        "key of FIELD_ENCRYPTION_KEYS."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        total = 0
        for schema in for_each_tenant():
            counts = secrets_rotate_all()
            total += sum(counts.values())
            detail = ", ".join(f"{name} {count}" for name, count in counts.items())
            self.stdout.write(f"{schema}: {sum(counts.values())} secrets re-encrypted ({detail})")
        self.stdout.write(self.style.SUCCESS(f"done: {total} secrets"))
