"""The document store's disk is full: an upload gets 507 with the one error body, no Document row, no file half
written; once there is room again, uploads are stored. The disk is real: a 1 MB tmpfs mounted for the test as the
store's folder (mounting needs root, as in CI's container; elsewhere the test is skipped, and fails under CI=true)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django_tenants.utils import tenant_context

from conftest import host_of
from knowledge.models import Document, KnowledgeBase
from tests.prerequisites import require_prerequisite

pytestmark = [pytest.mark.reliability, pytest.mark.django_db]


@pytest.fixture
def tiny_disk(tmp_path) -> Path:
    folder = tmp_path / "store"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True, text=True, timeout=10
    )
    require_prerequisite(
        "mounting a tmpfs", present=mounted.returncode == 0, hint=f"run as root ({mounted.stderr.strip()})"
    )
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True, timeout=10)


def stored_files(folder: Path) -> list[str]:
    return [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names]


def test_upload_to_a_full_disk_gets_507_and_leaves_nothing_behind(org, tiny_disk, settings):
    settings.KNOWLEDGE_STORAGE = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(tiny_disk), "base_url": None},
    }
    client = Client(HTTP_HOST=host_of(org.tenant), HTTP_AUTHORIZATION=f"Api-Key {org.key}")
    response = client.post(
        "/api/v1/knowledge-bases/",
        {"name": "Full disk", "embedding_model": "hashing-384"},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    kb_id = response.json()["id"]
    try:
        handbook = ("Refunds are accepted within 30 days of purchase. " * 30_000).encode()  # 1.5 MB on 1 MB
        response = client.post(f"/api/v1/knowledge-bases/{kb_id}/documents/", {"files": _file("big.txt", handbook)})
        assert response.status_code == 507, response.content
        assert response.json()["code"] == "insufficient_storage" and response.json()["detail"]
        with tenant_context(org.tenant):
            assert not Document.objects.filter(knowledge_base_id=kb_id).exists(), "a row names a file not stored"
        assert stored_files(tiny_disk) == [], "a half-written file was left behind"

        # The failed upload freed what it had written: a document that fits is stored.
        response = client.post(
            f"/api/v1/knowledge-bases/{kb_id}/documents/", {"files": _file("small.txt", handbook[:100_000])}
        )
        assert response.status_code == 202, response.content
        assert len(stored_files(tiny_disk)) == 1
    finally:
        with tenant_context(org.tenant):
            KnowledgeBase.objects.filter(pk=kb_id).delete()


def _file(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="text/plain")
