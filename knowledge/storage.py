"""Object storage for original documents, namespaced per tenant.

Every object lives under `tenant/<schema>/kb/<kb id>/<random>/<file name>`. Reads, writes and deletes
go through the helpers here, which refuse any path outside the *current* tenant's prefix, so a
stored path coming from a tampered row or request can never reach another tenant's files.
"""

from __future__ import annotations

import errno
import functools
import posixpath
import re
import uuid
from typing import IO

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import Storage, storages
from django.core.signals import setting_changed
from django.db import connection
from django.dispatch import receiver

from core.errors import DomainError, ErrorCode, NotFound


class StorageFull(DomainError):
    """The document store has no room left (a full disk or quota): nothing was stored; retry once space is freed."""

    code = ErrorCode.INSUFFICIENT_STORAGE
    status = 507


@functools.cache
def knowledge_storage() -> Storage:
    """The configured storage (settings.KNOWLEDGE_STORAGE: local files or S3-compatible)."""
    return storages.create_storage(settings.KNOWLEDGE_STORAGE)


@receiver(setting_changed)
def _storage_setting_changed(*, setting: str, **kwargs: object) -> None:
    # As Django's own storages do: an overridden KNOWLEDGE_STORAGE (tests) takes effect at once.
    if setting == "KNOWLEDGE_STORAGE":
        knowledge_storage.cache_clear()


def _schema() -> str:
    schema = getattr(connection, "schema_name", "public")
    if schema == "public":
        raise RuntimeError("knowledge storage is per tenant: use it inside a tenant context")
    return schema


def tenant_prefix(schema: str | None = None) -> str:
    return f"tenant/{schema or _schema()}/"


def kb_prefix(kb_id: int, schema: str | None = None) -> str:
    return f"{tenant_prefix(schema)}kb/{int(kb_id)}/"


def safe_filename(name: str) -> str:
    name = posixpath.basename(name.replace("\\", "/")) or "document"
    name = re.sub(r"[^\w.\- ]+", "_", name).strip(" .") or "document"
    return name[:150]


def document_path(kb_id: int, filename: str) -> str:
    # A random folder per stored object: re-uploads never overwrite a file an older version still names.
    return f"{kb_prefix(kb_id)}{uuid.uuid4().hex}/{safe_filename(filename)}"


def assert_tenant_path(path: str) -> str:
    """Return the normalised path, or raise NotFound if it is not inside the current tenant's prefix."""
    if not path or "\\" in path or "\x00" in path or path.startswith("/"):
        raise NotFound("Not found.")
    normalised = posixpath.normpath(path)
    if normalised != path or ".." in normalised.split("/") or not normalised.startswith(tenant_prefix()):
        raise NotFound("Not found.")
    return normalised


def storage_save(path: str, content: IO[bytes] | bytes) -> str:
    path = assert_tenant_path(path)
    if isinstance(content, bytes):
        content = ContentFile(content)
    elif not isinstance(content, File):
        content = File(content)
    storage = knowledge_storage()
    try:
        return storage.save(path, content)
    except OSError as exc:
        # A write that fails half-way leaves the part written (Django's file storage does not remove it): a file
        # no row names, holding the start of a document.
        try:
            storage.delete(path)
        except OSError:
            pass
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull("The document store is full; nothing was stored. Try again later.") from exc
        raise


def storage_open(path: str) -> IO[bytes]:
    return knowledge_storage().open(assert_tenant_path(path), "rb")


def storage_read(path: str) -> bytes:
    with storage_open(path) as fh:
        return fh.read()


def storage_delete(path: str) -> None:
    if path:
        knowledge_storage().delete(assert_tenant_path(path))


def storage_delete_prefix(prefix: str) -> int:
    """Delete every object under a prefix of the current tenant (a deleted knowledge base, or the whole
    tenant's prefix when the tenant is deleted). Returns count."""
    prefix = prefix.rstrip("/") + "/"
    if prefix != tenant_prefix():
        prefix = assert_tenant_path(prefix.rstrip("/")) + "/"
    storage = knowledge_storage()
    deleted = 0

    def walk(folder: str) -> None:
        nonlocal deleted
        try:
            dirs, files = storage.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return
        for name in files:
            storage.delete(posixpath.join(folder, name))
            deleted += 1
        for name in dirs:
            walk(posixpath.join(folder, name))

    walk(prefix.rstrip("/"))
    return deleted
