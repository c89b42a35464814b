from django.core.management.base import BaseCommand, CommandError

from tenants.citus import Node, citus_enabled, schema_node, tenant_move, workers
from tenants.selectors import tenant_get_by_slug


class Command(BaseCommand):
    help = (
        "Citus: move an organisation (its distributed schema, all tables) to another worker while it keeps serving. "
        "Without --to, to the worker holding the fewest organisations."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--to", help="target worker as host:port (one of the cluster's workers)")

    def handle(self, *args, slug, to, **options):
        if not citus_enabled():
            raise CommandError("DATABASE_CITUS is off: organisations live on one PostgreSQL and cannot be moved.")
        tenant = tenant_get_by_slug(slug=slug)
        if tenant is None:
            raise CommandError(f"No organisation '{slug}'.")
        target = None
        if to:
            host, _, port = to.rpartition(":")
            target = Node(host, int(port)) if port.isdigit() else None
            if target not in workers():
                raise CommandError(f"--to {to} is not one of the workers: {', '.join(map(str, workers()))}")
        try:
            source, destination = tenant_move(tenant.schema_name, to=target)
        except LookupError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{slug}: moved from {source} to {destination} (now on {schema_node(tenant.schema_name)})")
