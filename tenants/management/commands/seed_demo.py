import os

from django.core.management.base import BaseCommand

from accounts.models import User
from tenants.selectors import tenant_get_by_slug
from tenants.services import tenant_create, tenant_url

DEMO_EMAIL = "admin@demo.example.com"


class Command(BaseCommand):
    help = "Create (once) the demo organisation with an admin login, and print how to log in."

    def handle(self, *args, **options):
        password = os.environ.get("DEMO_ADMIN_PASSWORD", "demo-admin-pass-2026")
        tenant = tenant_get_by_slug(slug="demo")
        if tenant is None:
            owner = User.objects.filter(email=DEMO_EMAIL).first()
            tenant = tenant_create(
                name="Demo Org", slug="demo", owner=owner, owner_email=DEMO_EMAIL, owner_password=password
            )
            self.stdout.write(self.style.SUCCESS("Created the demo organisation."))
        self.stdout.write(f"Demo login: {DEMO_EMAIL} / {password}  at {tenant_url(tenant, '/accounts/login/')}")
