from django.conf import settings
from django.core.management.base import BaseCommand

from core.rls import db_as_system
from tenants.citus import citus_enabled, reference_tables_ensure
from tenants.services import public_tenant_ensure, template_schema_ensure


class Command(BaseCommand):
    help = "After migrate_schemas: ensure the public tenant/domain and an up-to-date tenant template schema."

    def handle(self, *args, **options):
        public_tenant_ensure()
        template_schema_ensure()
        if citus_enabled():
            # Before any organisation is distributed: what tenant tables reference is copied to every node.
            with db_as_system():
                converted = reference_tables_ensure(settings.TENANT_BASE_SCHEMA)
            if converted and options["verbosity"] >= 1:
                self.stdout.write(f"Citus: reference tables {', '.join(converted)}")
        self.stdout.write("platform ready: public domain and tenant template schema are current")
