from django.core.management.base import BaseCommand

from tenants.services import public_tenant_ensure, template_schema_ensure


class Command(BaseCommand):
    help = "After migrate_schemas: ensure the public tenant/domain and an up-to-date tenant template schema."

    def handle(self, *args, **options):
        public_tenant_ensure()
        template_schema_ensure()
        self.stdout.write("platform ready: public domain and tenant template schema are current")
