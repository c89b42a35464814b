"""Knowledge-base API: CRUD, visibility via iam.policy, uploads, versions, tenant isolation."""

from __future__ import annotations

import pytest
from django_tenants.utils import tenant_context

from accounts.models import Membership, Role, User
from conftest import PASSWORD
from knowledge import pipeline
from knowledge.models import Chunk, Document, DocumentStatus, KnowledgeBase
from knowledge.tests.conftest import uploaded_file

pytestmark = pytest.mark.django_db
API = "/api/v1/knowledge-bases/"


@pytest.fixture
def member_a(tenant_a):
    user = User.objects.create_user(email="member@acme.test", password=PASSWORD)
    Membership.objects.create(user=user, tenant=tenant_a, role=Role.USER)
    return user


@pytest.fixture
def readonly_a(tenant_a):
    user = User.objects.create_user(email="reader@acme.test", password=PASSWORD)
    Membership.objects.create(user=user, tenant=tenant_a, role=Role.READONLY)
    return user


def _create(client, **data):
    response = client.post(API, {"name": "Policies", **data}, content_type="application/json")
    assert response.status_code == 201, response.json()
    return response.json()


def test_knowledge_base_crud(client_a, admin_a):
    client_a.force_login(admin_a)
    kb = _create(client_a, description="HR", chunk_size=128, chunk_overlap=16)
    assert kb["embedding_model"] == "all-MiniLM-L6-v2" and kb["embedding_dimension"] == 384
    assert kb["current_version"] == 0 and kb["owner_id"] == admin_a.id
    assert [k["id"] for k in client_a.get(API).json()["results"]] == [kb["id"]]
    response = client_a.patch(
        f"{API}{kb['id']}/", {"name": "HR policies", "org_access": "viewer"}, content_type="application/json"
    )
    assert response.status_code == 200 and response.json()["name"] == "HR policies"
    bad = client_a.patch(f"{API}{kb['id']}/", {"chunk_overlap": 1000}, content_type="application/json")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid"
    assert client_a.delete(f"{API}{kb['id']}/").status_code == 204
    assert client_a.get(f"{API}{kb['id']}/").status_code == 404


def test_private_knowledge_base_is_invisible_to_other_members(client_a, admin_a, member_a, readonly_a):
    client_a.force_login(member_a)
    private = _create(client_a, name="Mine")
    shared = _create(client_a, name="Ours", org_access="viewer")
    client_a.force_login(readonly_a)
    assert [k["name"] for k in client_a.get(API).json()["results"]] == ["Ours"]
    assert client_a.get(f"{API}{private['id']}/").status_code == 404
    assert client_a.get(f"{API}{private['id']}/versions/").status_code == 404
    # Visible but read-only: no uploads, no edits, no new knowledge bases.
    upload = client_a.post(
        f"{API}{shared['id']}/documents/", {"title": "x", "text": "hello"}, content_type="application/json"
    )
    assert upload.status_code == 403
    assert client_a.post(API, {"name": "Nope"}, content_type="application/json").status_code == 403
    client_a.force_login(admin_a)  # admins see everything in their tenant
    assert {k["name"] for k in client_a.get(API).json()["results"]} == {"Mine", "Ours"}


def test_other_tenant_gets_nothing(client_a, client_b, admin_a, admin_b, tenant_a):
    client_a.force_login(admin_a)
    kb = _create(client_a, org_access="editor")
    uploaded = client_a.post(
        f"{API}{kb['id']}/documents/", {"title": "Secret", "text": "acme secret plans"}, content_type="application/json"
    )
    document_id = uploaded.json()["documents"][0]["id"]
    # A globex admin on the globex host: the id does not exist there.
    client_b.force_login(admin_b)
    for url in (
        f"{API}{kb['id']}/",
        f"{API}{kb['id']}/documents/",
        f"{API}{kb['id']}/versions/",
        f"{API}{kb['id']}/documents/{document_id}/",
        f"{API}{kb['id']}/documents/{document_id}/chunks/",
    ):
        response = client_b.get(url)
        assert response.status_code == 404, url
        assert "acme" not in response.content.decode()
    assert client_b.get(API).json()["results"] == []
    # The same globex admin on acme's host is not a member there.
    client_a.logout()
    client_a.force_login(admin_b)
    for url in (API, f"{API}{kb['id']}/", f"{API}{kb['id']}/documents/"):
        assert client_a.get(url).status_code in (401, 403), url
    assert client_a.post(
        f"{API}{kb['id']}/documents/", {"title": "x", "text": "y"}, content_type="application/json"
    ).status_code in (401, 403)
    assert client_a.delete(f"{API}{kb['id']}/").status_code in (401, 403)
    anonymous = client_a.__class__(HTTP_HOST="acme.localhost")
    assert anonymous.get(API).status_code in (401, 403)


def test_multipart_upload_of_several_files_and_text(client_a, admin_a, tenant_a):
    client_a.force_login(admin_a)
    kb = _create(client_a)
    response = client_a.post(
        f"{API}{kb['id']}/documents/",
        {
            "files": [uploaded_file("a.md", "# A\n\nAlpha text."), uploaded_file("b.txt", "Bravo text.")],
            "metadata": '{"team": "hr"}',
        },
    )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["version"] == 1 and body["errors"] == []
    assert sorted(d["title"] for d in body["documents"]) == ["a.md", "b.txt"]
    assert all(d["status"] == "pending" and d["metadata"]["team"] == "hr" for d in body["documents"])
    with tenant_context(tenant_a):
        for d in body["documents"]:
            assert Document.objects.get(id=d["id"]).storage_path.startswith(f"tenant/t_acme/kb/{kb['id']}/")
            pipeline.document_process(d["id"])
    listing = client_a.get(f"{API}{kb['id']}/documents/").json()["results"]
    assert {d["status"] for d in listing} == {"ready"} and {d["progress"] for d in listing} == {100}
    text = client_a.post(
        f"{API}{kb['id']}/documents/", {"title": "Note", "text": "Charlie text."}, content_type="application/json"
    )
    assert text.status_code == 202 and text.json()["version"] == 2
    chunks = client_a.get(f"{API}{kb['id']}/documents/{body['documents'][0]['id']}/chunks/").json()["results"]
    assert chunks and chunks[0]["valid_from"] == 1


def test_versions_diff_delete_and_rollback_api(client_a, admin_a, tenant_a):
    client_a.force_login(admin_a)
    kb = _create(client_a)
    docs = f"{API}{kb['id']}/documents/"

    def add(title, text):
        response = client_a.post(docs, {"title": title, "text": text}, content_type="application/json")
        assert response.status_code == 202, response.json()
        with tenant_context(tenant_a):
            for d in response.json()["documents"]:
                assert pipeline.document_process(d["id"])
        return response.json()["documents"][0]["id"]

    first = add("Refunds", "# Refunds\n\nRefunds are paid within 30 days.")
    add("Refunds", "# Refunds\n\nRefunds are paid within 14 days.")  # version 2 changes the one chunk
    second = add("Shipping", "# Shipping\n\nWe ship worldwide.")  # version 3
    assert client_a.delete(f"{docs}{first}/").json()["version"] == 4

    versions = client_a.get(f"{API}{kb['id']}/versions/").json()
    assert versions["current_version"] == 4
    assert [v["changes"]["kind"] for v in versions["results"]] == ["delete", "ingest", "ingest", "ingest"]
    v2 = client_a.get(f"{API}{kb['id']}/versions/2/").json()
    assert v2["diff"]["added"] == 1 and v2["diff"]["removed"] == 1
    assert "14 days" in v2["diff"]["added_chunks"][0]["text"]
    assert "30 days" in v2["diff"]["removed_chunks"][0]["text"]

    rollback = client_a.post(f"{API}{kb['id']}/versions/1/rollback/")
    assert rollback.status_code == 201, rollback.json()
    assert rollback.json()["number"] == 5 and rollback.json()["changes"]["rolled_back_to"] == 1
    with tenant_context(tenant_a):
        current = list(
            Chunk.objects.filter(knowledge_base_id=kb["id"], valid_to__isnull=True).values_list("text", flat=True)
        )
        assert len(current) == 1 and "30 days" in current[0]
        assert Document.objects.get(id=first).status == DocumentStatus.READY
        assert Document.objects.get(id=second).status == DocumentStatus.DELETED
        # History is intact: version 3 still answers as it was.
        at_3 = Chunk.objects.filter(knowledge_base_id=kb["id"], valid_from__lte=3).exclude(valid_to__lte=3)
        assert sorted(c.text.split("\n\n")[-1] for c in at_3) == [
            "Refunds are paid within 14 days.",
            "We ship worldwide.",
        ]
    assert client_a.post(f"{API}{kb['id']}/versions/9/rollback/").status_code == 400


def test_delete_knowledge_base_removes_files(client_a, admin_a, tenant_a, django_capture_on_commit_callbacks):
    from knowledge import storage

    client_a.force_login(admin_a)
    kb = _create(client_a)
    response = client_a.post(f"{API}{kb['id']}/documents/", {"files": [uploaded_file("a.md", "# A\n\nAlpha.")]})
    with tenant_context(tenant_a):
        path = Document.objects.get(id=response.json()["documents"][0]["id"]).storage_path
        assert storage.knowledge_storage().exists(path)
    with django_capture_on_commit_callbacks(execute=True):
        assert client_a.delete(f"{API}{kb['id']}/").status_code == 204
    with tenant_context(tenant_a):
        assert not storage.knowledge_storage().exists(path)
        assert not KnowledgeBase.objects.filter(id=kb["id"]).exists()
