"""Bad input: each refused with a clear per-file reason; the other files still go through; nothing orphaned."""

from __future__ import annotations

import os

import pytest
from django.core.files.uploadhandler import SkipFile
from django_tenants.utils import tenant_context

from knowledge import pipeline, storage
from knowledge.models import Chunk, Document, DocumentStatus
from knowledge.tests.conftest import uploaded_file
from knowledge.tests.factories import corrupt_pdf, make_docx_bomb, make_encrypted_pdf, make_pdf
from knowledge.uploads import LimitedUploadHandler

pytestmark = pytest.mark.django_db
API = "/api/v1/knowledge-bases/"
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(200)


@pytest.fixture
def kb_url(client_a, admin_a):
    client_a.force_login(admin_a)
    response = client_a.post(API, {"name": "Inbox"}, content_type="application/json")
    return f"{API}{response.json()['id']}/documents/"


def _stored_files(tenant, kb_url) -> list[str]:
    kb_id = int(kb_url.split("/")[4])
    root = storage.knowledge_storage().path(f"tenant/{tenant.schema_name}/kb/{kb_id}")
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files]


def test_bad_files_are_refused_per_file_and_the_good_one_is_processed(client_a, tenant_a, kb_url, settings):
    settings.KNOWLEDGE_MAX_UNCOMPRESSED_BYTES = 10 * 1024 * 1024
    response = client_a.post(
        kb_url,
        {
            "files": [
                uploaded_file("good.md", "# Good\n\nThis one is fine."),
                uploaded_file("image.txt", PNG),  # unsupported type by content, whatever the extension says
                uploaded_file("notes.txt", os.urandom(4096)),  # binary disguised as text
                uploaded_file("empty.md", b""),
                uploaded_file("bomb.docx", make_docx_bomb(30 * 1024 * 1024)),
                uploaded_file("archive.docx", _plain_zip()),  # a zip, but not a Word document
            ]
        },
    )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert [d["title"] for d in body["documents"]] == ["good.md"]
    errors = {e["name"]: e for e in body["errors"]}
    assert errors["image.txt"]["code"] == "unsupported_type" and "PNG image" in errors["image.txt"]["detail"]
    assert errors["notes.txt"]["code"] == "unsupported_type"
    assert errors["empty.md"]["code"] == "empty_document"
    assert errors["bomb.docx"]["code"] == "unreadable_document" and "zip bomb" in errors["bomb.docx"]["detail"]
    assert errors["archive.docx"]["code"] == "unsupported_type"
    with tenant_context(tenant_a):
        assert Document.objects.count() == 1  # refused files leave no document row...
        assert len(_stored_files(tenant_a, kb_url)) == 1  # ...and no stored file
        assert pipeline.document_process(body["documents"][0]["id"])


def _plain_zip() -> bytes:
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("readme.txt", "hello")
    return out.getvalue()


def test_all_files_refused_answers_4xx(client_a, kb_url):
    response = client_a.post(kb_url, {"files": [uploaded_file("image.png", PNG)]})
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_type" and response.json()["detail"].startswith("image.png:")


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("broken.pdf", corrupt_pdf(), "corrupted"),
        ("locked.pdf", make_encrypted_pdf([["Top secret figures."]]), "encrypted"),
        ("scan.pdf", make_pdf([[]]), "no extractable text"),
        ("bad.json", b'{"a": [1, 2,', "JSON is invalid"),
    ],
)
def test_documents_that_fail_in_processing_get_a_human_reason_and_leave_nothing(
    client_a, tenant_a, kb_url, name, data, reason, django_capture_on_commit_callbacks
):
    response = client_a.post(kb_url, {"files": [uploaded_file(name, data), uploaded_file("ok.md", "# Ok\n\nFine.")]})
    assert response.status_code == 202, response.json()
    ids = {d["title"]: d["id"] for d in response.json()["documents"]}
    with tenant_context(tenant_a), django_capture_on_commit_callbacks(execute=True):
        for document_id in ids.values():
            pipeline.document_process(document_id)
    with tenant_context(tenant_a):
        failed = Document.objects.get(id=ids[name])
        assert failed.status == DocumentStatus.FAILED
        assert reason in failed.error
        assert failed.storage_path == "" and not Chunk.objects.filter(document=failed).exists()
        assert Document.objects.get(id=ids["ok.md"]).status == DocumentStatus.READY
        assert len(_stored_files(tenant_a, kb_url)) == 1  # only ok.md's file remains
    listed = {d["title"]: d for d in client_a.get(kb_url).json()["results"]}
    assert listed[name]["status"] == "failed" and reason in listed[name]["error"]


def test_file_over_the_size_limit_is_refused_while_streaming(client_a, tenant_a, kb_url, settings):
    settings.KNOWLEDGE_MAX_FILE_BYTES = 10_000
    big = "# Big\n\n" + "x" * 50_000
    response = client_a.post(kb_url, {"files": [uploaded_file("big.md", big), uploaded_file("small.md", "# S\n\nok")]})
    assert response.status_code == 202, response.json()
    assert [d["title"] for d in response.json()["documents"]] == ["small.md"]
    assert response.json()["errors"] == [
        {"name": "big.md", "code": "file_too_large", "detail": "big.md is larger than the limit of 10000 bytes."}
    ]
    with tenant_context(tenant_a):
        assert len(_stored_files(tenant_a, kb_url)) == 1


def test_size_limit_handler_stops_at_the_first_chunk_over_the_limit():
    handler = LimitedUploadHandler(max_bytes=100)
    handler.new_file("files", "big.bin", "application/octet-stream", None)
    assert handler.receive_data_chunk(b"a" * 60, 0) == b"a" * 60
    with pytest.raises(SkipFile):
        handler.receive_data_chunk(b"a" * 60, 60)  # never passed on to the memory/disk handlers
    handler.new_file("files", "next.txt", "text/plain", None)
    assert handler.receive_data_chunk(b"b" * 90, 0) == b"b" * 90  # the next file starts from zero
    assert handler.rejected == ["big.bin"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/admin",
        "http://localhost:8000/",
        "http://10.0.0.7/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "file:///etc/passwd",
    ],
)
def test_url_to_a_private_address_is_refused(client_a, kb_url, url):
    response = client_a.post(kb_url, {"url": url}, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "unsafe_url"


def test_failed_reupload_keeps_the_published_version(client_a, tenant_a, kb_url, django_capture_on_commit_callbacks):
    first = client_a.post(kb_url, {"files": [uploaded_file("report.pdf", make_pdf([["Revenue grew."]]))]}).json()
    document_id = first["documents"][0]["id"]
    with tenant_context(tenant_a):
        assert pipeline.document_process(document_id)
        old_path = Document.objects.get(id=document_id).storage_path
    again = client_a.post(kb_url, {"files": [uploaded_file("report.pdf", corrupt_pdf())]}).json()
    assert [d["id"] for d in again["documents"]] == [document_id]
    with tenant_context(tenant_a), django_capture_on_commit_callbacks(execute=True):
        pipeline.document_process(document_id)
    with tenant_context(tenant_a):
        document = Document.objects.get(id=document_id)
        assert document.status == DocumentStatus.FAILED and "corrupted" in document.error
        assert document.storage_path == old_path  # the previous file is still the document's file
        assert Chunk.objects.filter(document=document, valid_to__isnull=True).count() == 1
        assert len(_stored_files(tenant_a, kb_url)) == 1


def test_storage_refuses_paths_outside_the_current_tenant(tenant_a, tenant_b):
    from core.errors import NotFound

    with tenant_context(tenant_a):
        ok = storage.document_path(1, "../../etc/passwd")
        assert ok.startswith("tenant/t_acme/kb/1/") and ok.endswith("/passwd")
        for path in (
            "tenant/t_globex/kb/1/x/file.md",
            "tenant/t_acme/kb/1/../../t_globex/kb/1/f",
            "/etc/passwd",
            "tenant/t_acme/../t_globex/x",
            "tenant/t_acmex/kb/1/f",
            "",
        ):
            with pytest.raises(NotFound):
                storage.storage_open(path)
    with tenant_context(tenant_b), pytest.raises(NotFound):
        storage.storage_read("tenant/t_acme/kb/1/x/file.md")


# --- Bad request bodies and query parameters: 4xx in the one error shape, never a 5xx --------------------------

DEEP = "[" * 50_000 + "]" * 50_000


def test_json_nested_50000_deep_is_refused_on_search_and_document_create(client_a, kb_url):
    for url in (kb_url.replace("documents/", "search/"), kb_url, API):
        response = client_a.post(url, DEEP, content_type="application/json")
        assert response.status_code == 400, (url, response.content[:200])
        assert response.json()["code"] == "nesting_too_deep"
    form = client_a.post(kb_url, {"texts": DEEP})  # JSON inside a multipart field
    assert form.status_code == 400 and form.json()["code"] == "nesting_too_deep"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"urls": 5}, "urls"),  # was a TypeError
        ({"urls": [5]}, "urls"),
        ({"urls": [{"a": 1}]}, "urls"),
        ({"urls": {"a": 1}}, "urls"),
        ([1, 2], None),  # a JSON list, not an object
        ('"text"', None),
    ],
)
def test_malformed_document_sources_are_a_400(client_a, kb_url, body, field):
    response = client_a.post(kb_url, body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid" and response.json().get("field") == field


def test_a_nul_character_in_a_title_or_a_metadata_key_is_a_400_not_a_database_error(client_a, kb_url):
    search_url = kb_url.replace("documents/", "search/")
    for url, body in (
        (kb_url, '{"text": "hello", "title": "t\\u0000"}'),
        (search_url, '{"query": "x", "metadata": {"a\\u0000": "b"}}'),
    ):
        response = client_a.post(url, body, content_type="application/json")
        assert response.status_code == 400, (url, response.content)


def test_a_json_text_document_may_be_as_large_as_a_file(client_a, kb_url, settings):
    settings.API_JSON_MAX_BYTES = 1000
    text = "# Notes\n\n" + "word " * 1000
    response = client_a.post(kb_url, {"title": "notes.md", "text": text}, content_type="application/json")
    assert response.status_code == 202, response.content
    settings.KNOWLEDGE_MAX_FILE_BYTES = 1000
    response = client_a.post(kb_url, {"title": "notes.md", "text": text}, content_type="application/json")
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"


def test_knowledge_base_search_settings_must_be_an_object(client_a, kb_url):
    response = client_a.post(API, {"name": "x", "search_settings": "s"}, content_type="application/json")
    assert response.status_code == 400 and "search_settings" in response.json()["fields"]


@pytest.mark.parametrize("query", ["?status=%00", "?status=zzz", "?deleted=abc"])
def test_document_list_query_parameters_are_validated(client_a, kb_url, query):
    response = client_a.get(kb_url + query)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid"


def test_document_list_filters_still_work(client_a, kb_url):
    client_a.post(kb_url, {"title": "a.md", "text": "# A\n\nfine"}, content_type="application/json")
    assert [d["title"] for d in client_a.get(kb_url + "?status=pending").json()["results"]] == ["a.md"]
    assert client_a.get(kb_url + "?status=ready").json()["results"] == []
    assert client_a.get(kb_url + "?status=&deleted=1").status_code == 200
