from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from core.rls import db_as_system
from tenants.citus import citus_enabled, distributed_schemas, schema_distribute
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Citus: distribute the organisations whose schema is still a plain schema on the coordinator (a database "
        "moved from one PostgreSQL to Citus). New organisations are distributed when they are provisioned."
    )

    def handle(self, *args, **options):
        if not citus_enabled():
            raise CommandError("DATABASE_CITUS is off: there is no cluster to distribute organisations over.")
        done = distributed_schemas()
        pending = Tenant.objects.exclude(schema_name="public").exclude(schema_name__in=done).order_by("schema_name")
        for tenant in pending:
            with db_as_system(), transaction.atomic():  # one organisation at a time: a failure leaves it as it was
                schema_distribute(tenant.schema_name)
            self.stdout.write(f"{tenant.slug}: distributed")
        self.stdout.write(f"{len(done) + len(pending)} organisations distributed")
