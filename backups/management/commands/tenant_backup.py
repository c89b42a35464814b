from django.core.management.base import BaseCommand, CommandError

from backups.archive import archive_write
from backups.models import Backup
from backups.runner import backup_run
from core.rls import db_as_system
from core.tenancy import in_tenant
from tenants.selectors import tenant_get_by_slug


class Command(BaseCommand):
    help = (
        "Back up an organisation now: into its storage prefix (listed with its other backups), or with --output into "
        "a file, to restore it elsewhere with tenant_restore (another database cluster)."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--output", help="write the archive to this file instead of the organisation's storage")
        parser.add_argument("--no-conversations", action="store_true", help="leave conversations out")

    def handle(self, *args, slug, output, no_conversations, **options):
        tenant = tenant_get_by_slug(slug=slug)
        if tenant is None:
            raise CommandError(f"No organisation '{slug}'.")
        if output:
            with open(output, "wb") as out, in_tenant(tenant), db_as_system():
                manifest = archive_write(tenant=tenant, out=out, include_conversations=not no_conversations)
            self.stdout.write(f"{slug}: {manifest['counts']} written to {output}")
            return
        backup = Backup.objects.create(tenant=tenant, include_conversations=not no_conversations)
        backup = backup_run(backup_id=str(backup.id))
        self.stdout.write(f"{slug}: backup {backup.id} ({backup.size_bytes} bytes) at {backup.path}")
