import json
import zipfile

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from backups.archive import archive_verify
from backups.models import Backup, BackupStatus, Restore
from backups.runner import restore_run
from core.errors import DomainError
from iam.selectors import admin_emails
from tenants.selectors import tenant_get_by_slug
from tenants.services import tenant_create, tenant_delete


class Command(BaseCommand):
    help = (
        "Restore an organisation from a backup (--backup ID, stored) or an archive file (--file, e.g. from another "
        "cluster's tenant_backup --output) into the organisation SLUG: an existing one is replaced (--replace), a "
        "missing one is created (--name). The archive is verified before anything changes; a failure changes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the organisation to restore into")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--backup", help="id of a stored backup")
        source.add_argument("--file", help="path of a backup archive")
        parser.add_argument("--name", help="name of the organisation to create (SLUG must not exist)")
        parser.add_argument("--replace", action="store_true", help="replace everything in the existing SLUG")
        parser.add_argument(
            "--create-missing-users",
            action="store_true",
            help="create accounts (without password) for members the backup names who have none here",
        )

    def handle(self, *args, slug, backup, file, name, replace, create_missing_users, **options):
        stored = None
        if backup:
            stored = Backup.objects.select_related("tenant").filter(pk=backup, status=BackupStatus.DONE).first()
            if stored is None:
                raise CommandError(f"No finished backup {backup}.")
        else:
            try:
                archive_verify(file)  # before anything is created
            except DomainError as error:
                raise CommandError(error.message) from error
        tenant = tenant_get_by_slug(slug=slug)
        created = False
        if tenant is not None and not replace:
            raise CommandError(f"'{slug}' exists: add --replace to replace everything in it, or choose a new slug.")
        if tenant is None:
            if not name:
                raise CommandError(f"No organisation '{slug}': give --name to create it.")
            owner = self._owner(file, stored, create_missing_users)
            try:
                tenant = tenant_create(name=name, slug=slug, owner=owner)
            except DomainError as error:
                raise CommandError(error.message) from error
            created = True
        restore = Restore.objects.create(
            tenant=tenant, backup=stored, source_tenant_id=stored.tenant_id if stored else None
        )
        try:
            restore = restore_run(
                restore_id=str(restore.id), path=file, create_missing_users=create_missing_users, created=created
            )
        except Exception as error:
            if created:
                tenant_delete(tenant=tenant)
            if isinstance(error, DomainError):
                raise CommandError(error.message) from error
            raise
        self.stdout.write(self.style.SUCCESS(f"Restored into {slug}: {restore.counts}"))

    def _owner(self, file, stored, create_missing_users):
        """The new organisation's first admin: the backup's first admin, who must have an account here."""
        if stored is not None:
            emails = admin_emails(stored.tenant)
        else:
            with zipfile.ZipFile(file) as archive:
                organisation = json.loads(archive.read("organisation.json"))
            emails = [m["email"] for m in organisation["members"] if m["role"] == "admin"]
        if not emails:
            raise CommandError("The backup names no admin to own the new organisation.")
        user = get_user_model().objects.filter(email__iexact=emails[0]).first()
        if user is None:
            if not create_missing_users:
                raise CommandError(f"{emails[0]} (the backup's admin) has no account here: add --create-missing-users.")
            user = get_user_model().objects.create_user(email=emails[0], password=None)
        return user
