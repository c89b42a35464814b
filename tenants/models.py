from django.conf import settings
from django.db import connection, models
from django_tenants.models import DomainMixin, TenantMixin
from django_tenants.postgresql_backend.base import _check_schema_name
from django_tenants.utils import get_creation_fakes_migrations, schema_exists


class Tenant(TenantMixin):
    """An organisation. Its data lives in its own PostgreSQL schema (`schema_name`)."""

    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=40, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    # Schemas are created by tenants.services.tenant_create (cloned from the template) and dropped
    # with the row, so a deleted organisation leaves nothing behind.
    auto_create_schema = True
    auto_drop_schema = True
    # Tables only: clone_schema's row copy runs with a search_path lacking `extensions`, so it cannot
    # cast vector columns; migration history is re-recorded by the faked migrate that follows.
    clone_mode = "NODATA"

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def create_schema(self, check_if_exists=False, sync_schema=True, verbosity=1):
        """Clone the template schema (tenants.cloning); fall back to migrating when there is none."""
        base = getattr(settings, "TENANT_BASE_SCHEMA", None)
        if not (sync_schema and base and get_creation_fakes_migrations() and schema_exists(base)):
            return super().create_schema(check_if_exists, sync_schema, verbosity)
        if check_if_exists and schema_exists(self.schema_name):
            return False
        from .cloning import schema_clone

        _check_schema_name(self.schema_name)
        schema_clone(base, self.schema_name)
        connection.set_schema_to_public()
        return True


class Domain(DomainMixin):
    pass
