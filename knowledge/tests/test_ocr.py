"""OCR: a scanned PDF page and a PNG upload are read by Tesseract and found by search; without an engine, the same
clear refusal as before; the OCR language is a knowledge-base setting checked against the installed languages."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageDraw, ImageFont

from core.errors import InvalidInput
from knowledge import pipeline, retrieval, services
from knowledge.models import DocumentStatus
from knowledge.ocr import installed_ocr_languages, ocr_available
from knowledge.tests.conftest import ingest, ready, upload
from tests.prerequisites import require_prerequisite

pytestmark = pytest.mark.django_db

SCANNED_TEXT = ["Warranty claims need the", "original invoice number."]


def _scan(lines: list[str]) -> Image.Image:
    """A page as a scanner would give it: black text on white, no text layer anywhere."""
    image = Image.new("L", (1400, 120 + 90 * len(lines)), color=255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=56)
    for index, line in enumerate(lines):
        draw.text((60, 60 + 90 * index), line, fill=0, font=font)
    return image


def _encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **({"resolution": 150.0} if fmt == "PDF" else {}))
    return out.getvalue()


@pytest.fixture
def tesseract():
    require_prerequisite(
        "Tesseract (OCR engine)", present=ocr_available(), hint="apt-get install tesseract-ocr tesseract-ocr-eng"
    )


def test_scanned_pdf_page_is_read_by_ocr_with_progress_and_found_by_search(tesseract, kb, admin_a, monkeypatch):
    stages: list[tuple[str, int]] = []
    progress = pipeline._progress

    def recording(document, token, percent, stage):
        stages.append((stage, percent))
        progress(document, token, percent, stage)

    monkeypatch.setattr(pipeline, "_progress", recording)
    scanned = _encoded(_scan(SCANNED_TEXT), "PDF")
    document = ready(ingest(kb, admin_a, upload("claim-form.pdf", scanned)).documents[0])
    assert document.page_count == 1
    assert [s for s in stages if s[0] == "ocr"] == [("ocr", pipeline.P_EXTRACTED)]  # one page, reported once
    hit = retrieval.search(knowledge_base=kb, query="original invoice number", top_k=1, mode="lexical")[0]
    assert hit.document_id == document.id and "invoice" in hit.text.lower()
    assert (hit.page_start, hit.page_end) == (1, 1)


def test_png_upload_is_read_by_ocr_and_found_by_search(tesseract, kb, admin_a):
    document = ready(ingest(kb, admin_a, upload("receipt.png", _encoded(_scan(SCANNED_TEXT), "PNG"))).documents[0])
    assert document.mime_type == "image/png" and document.metadata["kind"] == "png"
    hit = retrieval.search(knowledge_base=kb, query="warranty claims", top_k=1, mode="lexical")[0]
    assert hit.document_id == document.id and "warranty" in hit.text.lower()


def test_without_an_ocr_engine_scans_fail_as_before(kb, admin_a, settings):
    settings.KNOWLEDGE_OCR_COMMAND = "no-such-ocr-engine"
    failed = ingest(kb, admin_a, upload("scan.pdf", _encoded(_scan(["Nothing to read"]), "PDF"))).documents[0]
    assert failed.status == DocumentStatus.FAILED
    assert "scanned pages need OCR first" in failed.error
    refused = services.documents_ingest(
        kb=kb, user=admin_a, uploads=[upload("photo.png", _encoded(_scan(["Nothing"]), "PNG"))]
    )
    assert not refused.documents
    assert refused.errors[0]["code"] == "unsupported_type"
    assert "PNG image" in refused.errors[0]["detail"] and "OCR" in refused.errors[0]["detail"]


def test_ocr_language_is_checked_against_the_installed_languages(tesseract, in_tenant_a, admin_a):
    assert "eng" in installed_ocr_languages()
    kb = services.knowledge_base_create(owner=admin_a, name="Scans", ocr_language="eng")
    assert kb.ocr_language == "eng"
    for wrong in ("xyz", "eng+xyz", "eng; rm -rf /", ""):
        with pytest.raises(InvalidInput) as refused:
            services.knowledge_base_update(kb=kb, user=admin_a, ocr_language=wrong)
        assert refused.value.field == "ocr_language"
    kb.refresh_from_db()
    assert kb.ocr_language == "eng"
