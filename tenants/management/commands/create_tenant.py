from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from core.errors import DomainError
from core.tenancy import tenant_url
from tenants.services import tenant_create


class Command(BaseCommand):
    help = "Create an organisation with its own schema and an admin owner."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--slug", required=True)
        parser.add_argument("--owner-email", required=True)
        parser.add_argument("--owner-password", help="Required when the owner does not exist yet.")

    def handle(self, *args, name, slug, owner_email, owner_password, **options):
        owner = get_user_model().objects.filter(email=owner_email.strip().lower()).first()
        try:
            tenant = tenant_create(
                name=name, slug=slug, owner=owner, owner_email=owner_email, owner_password=owner_password
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(self.style.SUCCESS(f"Created {tenant.slug} at {tenant_url(tenant)}"))
