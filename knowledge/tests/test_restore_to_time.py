"""Point-in-time restore of a knowledge base: the version current at a time becomes current again, through the
rollback (same checks, event, audit); times before the first version or in the future are refused clearly."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from accounts.models import Membership, Role, User
from conftest import PASSWORD
from knowledge import selectors
from knowledge.models import KnowledgeBaseVersion
from knowledge.tests.conftest import ingest, upload
from usage.models import AuditEntry

pytestmark = pytest.mark.django_db
T0 = timezone.now().replace(microsecond=0) - dt.timedelta(days=1)


def _texts(kb) -> list[str]:
    return sorted(c.text for c in selectors.chunks_at(kb=kb))


@pytest.fixture
def history(kb, admin_a):
    """v1 at T0, v2 at T0+1h, v3 at T0+2h (creation times pinned so the test names exact instants)."""
    for hours, text in enumerate(("Alpha one.", "Alpha two.", "Alpha three.")):
        version = ingest(kb, admin_a, upload("a.md", text)).version
        KnowledgeBaseVersion.objects.filter(pk=version.pk).update(created_at=T0 + dt.timedelta(hours=hours))
    return kb


def _restore(client, kb, at: str):
    return client.post(f"/api/v1/knowledge-bases/{kb.pk}/restore-to-time/", {"at": at}, content_type="application/json")


def test_restore_to_time_brings_back_the_version_current_then(history, client_a, admin_a):
    client_a.force_login(admin_a)
    # 1h30 after T0 the current version was v2 (created at T0+1h); a naive time is read as UTC.
    at = (T0 + dt.timedelta(hours=1, minutes=30)).astimezone(dt.UTC).replace(tzinfo=None).isoformat()
    response = _restore(client_a, history, at)
    assert response.status_code == 201, response.content
    assert response.json()["number"] == 4 and response.json()["changes"]["rolled_back_to"] == 2
    assert _texts(history) == ["Alpha two."]
    entry = AuditEntry.objects.get(action="knowledge_base.rollback")
    assert entry.actor_id == admin_a.pk and entry.after["rolled_back_to"] == 2
    # Exactly at a version's creation time, that version is the one current.
    response = _restore(client_a, history, T0.isoformat())
    assert response.status_code == 201 and response.json()["changes"]["rolled_back_to"] == 1
    assert _texts(history) == ["Alpha one."]


def test_restore_to_time_refuses_times_before_the_first_version_or_in_the_future(history, client_a, admin_a):
    client_a.force_login(admin_a)
    for at, words in [
        ((T0 - dt.timedelta(seconds=1)).isoformat(), "before the knowledge base's first version"),
        ((timezone.now() + dt.timedelta(hours=1)).isoformat(), "in the future"),
    ]:
        response = _restore(client_a, history, at)
        assert response.status_code == 400, response.content
        body = response.json()
        assert body["code"] == "invalid" and words in body["detail"], body
    assert _restore(client_a, history, "yesterday").status_code == 400
    # Now is within v3, the current version: nothing to restore.
    assert _restore(client_a, history, timezone.now().isoformat()).status_code == 409
    assert history.versions.count() == 3 and _texts(history) == ["Alpha three."]


def test_restore_to_time_needs_edit_access(history, client_a, tenant_a):
    reader = User.objects.create_user(email="reader@acme.test", password=PASSWORD)
    Membership.objects.create(user=reader, tenant=tenant_a, role=Role.READONLY)
    client_a.force_login(reader)
    assert _restore(client_a, history, T0.isoformat()).status_code == 403
    assert history.versions.count() == 3


def test_dashboard_restores_to_a_time_from_the_versions_page(history, client_a, admin_a):
    client_a.force_login(admin_a)
    page = client_a.get(f"/knowledge/{history.pk}/versions/")
    assert b'name="at"' in page.content and b"restore-to-time" in page.content
    at = (T0 + dt.timedelta(hours=1, minutes=1)).strftime("%Y-%m-%dT%H:%M")  # what <input type=datetime-local> sends
    response = client_a.post(f"/knowledge/{history.pk}/restore-to-time/", {"at": at}, follow=True)
    assert b"Restored the content of version 2" in response.content
    assert _texts(history) == ["Alpha two."]
    response = client_a.post(f"/knowledge/{history.pk}/restore-to-time/", {"at": "2001-01-01T00:00"}, follow=True)
    assert b"before the knowledge base&#x27;s first version" in response.content
