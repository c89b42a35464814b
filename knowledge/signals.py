"""Knowledge's answers to other apps' signals."""

import logging
from typing import Any

from django.dispatch import receiver

from core.tenancy import in_tenant
from tenants.signals import tenant_schema_dropped

from .storage import storage_delete_prefix, tenant_prefix

logger = logging.getLogger(__name__)


@receiver(tenant_schema_dropped)
def _tenant_files_delete(*, schema: str, **kwargs: Any) -> None:
    """Stored files live outside the database: a deleted organisation's whole prefix goes with its schema."""
    with in_tenant(schema):  # storage paths are checked against the current schema; no query runs
        deleted = storage_delete_prefix(tenant_prefix())
    logger.info("deleted %d stored files of tenant schema %s", deleted, schema)
