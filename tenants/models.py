from django.db import models
from django_tenants.models import DomainMixin, TenantMixin


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


class Domain(DomainMixin):
    pass
