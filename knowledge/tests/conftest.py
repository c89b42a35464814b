from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django_tenants.utils import tenant_context

from knowledge import pipeline, services
from knowledge.models import Document, DocumentStatus


@pytest.fixture(autouse=True)
def _knowledge_storage_in_tmp(request, settings, tmp_path):
    """Each test stores documents in its own folder (on_commit cleanups do not run in rolled-back tests).
    End-to-end tests keep the configured storage: the worker process must read the same files."""
    from knowledge import storage

    if request.node.get_closest_marker("e2e"):
        yield
        return
    settings.KNOWLEDGE_STORAGE = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(tmp_path / "media")},
    }
    storage.knowledge_storage.cache_clear()
    yield
    storage.knowledge_storage.cache_clear()


@pytest.fixture
def in_tenant_a(tenant_a):
    with tenant_context(tenant_a):
        yield tenant_a


@pytest.fixture
def kb(in_tenant_a, admin_a):
    return services.knowledge_base_create(owner=admin_a, name="Handbook", chunk_size=64, chunk_overlap=8)


def upload(name: str, data: bytes | str, title: str | None = None) -> services.Upload:
    if isinstance(data, str):
        data = data.encode()
    return services.Upload(title=title or name, file=io.BytesIO(data), filename=name)


def uploaded_file(name: str, data: bytes | str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data.encode() if isinstance(data, str) else data)


def ingest(kb, user, *uploads_: services.Upload) -> services.IngestResult:
    """Ingest and run the pipeline in this process (tests run inside one rolled-back transaction)."""
    result = services.documents_ingest(kb=kb, user=user, uploads=list(uploads_))
    for document in result.documents:
        pipeline.document_process(document.id)
    for document in result.documents:
        document.refresh_from_db()
    return result


def ready(document: Document) -> Document:
    document.refresh_from_db()
    assert document.status == DocumentStatus.READY, (document.status, document.error)
    return document
