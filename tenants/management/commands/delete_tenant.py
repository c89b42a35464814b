from django.core.management.base import BaseCommand, CommandError

from tenants.selectors import tenant_get_by_slug
from tenants.services import tenant_delete


class Command(BaseCommand):
    help = "Delete an organisation and drop its schema. Irreversible."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")

    def handle(self, *args, slug, yes, **options):
        tenant = tenant_get_by_slug(slug=slug)
        if tenant is None:
            raise CommandError(f"No organisation '{slug}'.")
        if not yes and input(f"Delete {slug} and all its data? Type the slug to confirm: ") != slug:
            raise CommandError("Not confirmed; nothing deleted.")
        tenant_delete(tenant=tenant)
        self.stdout.write(self.style.SUCCESS(f"Deleted {slug}"))
