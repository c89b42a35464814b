"""Where a passage is: page numbers (PDF) and heading trails (Markdown, HTML, DOCX) on chunks, search results and
citations; running headers, footers and page numbers dropped at extraction."""

from __future__ import annotations

import io

import docx
import pytest
from django_tenants.utils import tenant_context

from knowledge import retrieval, services, views
from knowledge.extraction import strip_running_lines
from knowledge.models import Chunk
from knowledge.tests.conftest import ingest, ready, upload
from knowledge.tests.factories import make_pdf

pytestmark = pytest.mark.django_db

WORDS = ["harbour", "glacier", "orchard", "lantern", "meadow", "canyon"]


def _report_pdf(pages: int) -> bytes:
    """A PDF whose every page has the same header, a numbered footer and a body whose every line names its page's
    word (so any chunk tells which pages it came from)."""
    return make_pdf(
        [
            [
                "ACME Field Manual - Confidential",
                *(f"The {WORDS[n - 1]} procedure is step {k} of the {WORDS[n - 1]} checklist." for k in range(1, 5)),
                f"Page {n} of {pages}",
            ]
            for n in range(1, pages + 1)
        ]
    )


def _pages_named(text: str) -> set[int]:
    return {n for n, word in enumerate(WORDS, start=1) if word in text}


def _current(document) -> list[Chunk]:
    return list(Chunk.objects.filter(document=document, valid_to__isnull=True).order_by("position"))


def test_running_headers_footers_and_page_numbers_are_removed():
    pages = [
        ["Annual report 2024", "", f"The {WORDS[n - 1]} section opens here.", "", str(n)]
        if n % 2
        else ["Annual report 2024", f"Page {n} of 6", f"The {WORDS[n - 1]} section goes on.", "- 12 -"]
        for n in range(1, 7)
    ]
    cleaned = strip_running_lines(pages)
    text = "\n".join(line for lines in cleaned for line in lines)
    assert "Annual report" not in text and "Page 2 of 6" not in text and "- 12 -" not in text
    assert all(f"The {word} section" in text for word in WORDS)
    assert cleaned[0] == ["", "The harbour section opens here.", ""]  # paragraph breaks survive
    # Two pages are too few to call a line "running": only bare page numbers go.
    assert strip_running_lines([["Intro", "Text one.", "1"], ["Intro", "Text two.", "2"]]) == [
        ["Intro", "Text one."],
        ["Intro", "Text two."],
    ]


def test_pdf_chunks_keep_their_pages_without_running_lines_and_search_returns_them(kb, admin_a):
    document = ready(ingest(kb, admin_a, upload("manual.pdf", _report_pdf(4))).documents[0])
    chunks = _current(document)
    assert document.page_count == 4
    text = "\n".join(c.text for c in chunks)
    assert "Confidential" not in text and "Page 2 of 4" not in text
    assert set().union(*(_pages_named(c.text) for c in chunks)) == {1, 2, 3, 4}
    for chunk in chunks:
        named = _pages_named(chunk.text)
        assert (chunk.page_start, chunk.page_end) == (min(named), max(named))
    assert all(c.section_path == [] for c in chunks)

    hit = retrieval.search(knowledge_base=kb, query="orchard procedure checklist", top_k=1)[0]
    assert hit.page_start <= 3 <= hit.page_end
    assert (hit.citation["page_start"], hit.citation["page_end"]) == (hit.page_start, hit.page_end)
    assert hit.citation["section_path"] == []
    single = f"p. {hit.page_start}"
    assert hit.location == (single if hit.page_start == hit.page_end else f"pp. {hit.page_start}\u2013{hit.page_end}")


def test_page_numbers_stay_right_when_a_large_document_is_embedded_in_parts(kb, admin_a, settings):
    settings.KNOWLEDGE_INGEST_PART_CHUNKS = 2  # 6 one-page chunks: three parts
    document = ready(ingest(kb, admin_a, upload("manual.pdf", _report_pdf(6))).documents[0])
    assert document.metadata["last_ingest"]["parts"] >= 2
    chunks = _current(document)
    assert len(chunks) == document.chunk_count
    assert set().union(*(_pages_named(c.text) for c in chunks)) == set(range(1, 7))
    for chunk in chunks:
        named = _pages_named(chunk.text)
        assert (chunk.page_start, chunk.page_end) == (min(named), max(named))


def test_a_page_inserted_before_unchanged_text_moves_its_citation(kb, admin_a):
    first = ready(ingest(kb, admin_a, upload("notes.pdf", make_pdf([["Alpha notes about the harbour."]]))).documents[0])
    assert [(c.page_start, c.page_end) for c in _current(first)] == [(1, 1)]
    # The same text now on page 2, behind a page without text: same chunk text (and embedding), new page.
    again = ingest(kb, admin_a, upload("notes.pdf", make_pdf([[], ["Alpha notes about the harbour."]])))
    assert again.documents[0].id == first.id
    chunks = _current(ready(first))
    assert [(c.page_start, c.page_end) for c in chunks] == [(2, 2)]
    assert first.metadata["last_ingest"]["reused"] == 1 and first.metadata["last_ingest"]["embedded"] == 0


def test_markdown_html_and_docx_chunks_carry_their_heading_trail(kb, admin_a):
    markdown = (
        "# Guide\n\n## Installation\n\nDownload the installer and run it as root.\n\n"
        "### Upgrading\n\nStop the service, then install the new release over the old one.\n\n"
        "## Usage\n\nStart the service with the start command.\n"
    )
    html = (
        "<html><body><h1>Guide</h1><h2>Installation</h2><p>Unpack the tarball into the opt folder.</p>"
        "<h3>Upgrading</h3><p>Back up the database before replacing the binaries.</p></body></html>"
    )
    word = docx.Document()
    word.add_heading("Installation", level=1)
    word.add_paragraph("Insert the setup disc and follow the wizard.")
    word.add_heading("Upgrading", level=2)
    word.add_paragraph("Uninstall the previous edition before upgrading the licence.")
    out = io.BytesIO()
    word.save(out)
    result = ingest(
        kb, admin_a, upload("guide.md", markdown), upload("guide.html", html), upload("g.docx", out.getvalue())
    )
    md_doc, html_doc, docx_doc = (ready(d) for d in result.documents)

    def trail(document, words: str) -> list[str]:
        (chunk,) = [c for c in _current(document) if words in c.text]
        assert chunk.page_start is None and chunk.page_end is None
        return chunk.section_path

    assert trail(md_doc, "installer") == ["Guide", "Installation"]
    assert trail(md_doc, "new release") == ["Guide", "Installation", "Upgrading"]
    assert trail(md_doc, "start command") == ["Guide", "Usage"]
    assert trail(html_doc, "tarball") == ["Guide", "Installation"]
    assert trail(html_doc, "Back up the database") == ["Guide", "Installation", "Upgrading"]
    assert trail(docx_doc, "wizard") == ["Installation"]
    assert trail(docx_doc, "previous edition") == ["Installation", "Upgrading"]

    hit = retrieval.search(knowledge_base=kb, query="uninstall the previous edition licence", top_k=1)[0]
    assert hit.document_id == docx_doc.id and hit.section_path == ["Installation", "Upgrading"]
    assert hit.citation["section_path"] == ["Installation", "Upgrading"] and hit.citation["page_start"] is None
    assert hit.location == "Installation \u203a Upgrading"


def test_search_api_and_playground_show_page_and_section(client_a, admin_a, tenant_a):
    client_a.force_login(admin_a)
    with tenant_context(tenant_a):
        kb = services.knowledge_base_create(owner=admin_a, name="Manual", chunk_size=64, chunk_overlap=8)
        ready(ingest(kb, admin_a, upload("manual.pdf", _report_pdf(4))).documents[0])
        ingest(kb, admin_a, upload("guide.md", "# Install\n\n## Upgrading\n\nThe canyon upgrade keeps settings.\n"))
    body = client_a.post(
        f"/api/v1/knowledge-bases/{kb.pk}/search/",
        {"query": "lantern checklist", "top_k": 1},
        content_type="application/json",
    ).json()
    top = body["results"][0]
    assert top["page_end"] == 4 and top["section_path"] == [] and "lantern" in top["text"]
    assert (top["citation"]["page_start"], top["citation"]["page_end"]) == (top["page_start"], 4)
    page = client_a.get(f"/knowledge/{kb.pk}/search/", {"q": "canyon upgrade", "k": 1}).content.decode()
    assert "Install \u203a Upgrading" in page
    page = client_a.get(f"/knowledge/{kb.pk}/search/", {"q": "lantern checklist", "k": 1}).content.decode()
    assert f"{top['page_start']}\u20134" in page or "p. 4" in page


def test_a_passage_deep_in_a_long_document_is_shown_highlighted_where_a_citation_leads(
    kb, admin_a, client_a, monkeypatch
):
    monkeypatch.setattr(views, "PASSAGES_SHOWN", 2)  # a "long" document: more passages than a page shows
    document = ready(ingest(kb, admin_a, upload("manual.pdf", _report_pdf(6))).documents[0])
    chunks = _current(document)
    assert len(chunks) > 2 * views.PASSAGES_SHOWN
    last = chunks[-1]
    client_a.force_login(admin_a)
    for headers in ({"HTTP_HX_REQUEST": "true"}, {}):  # the chat's passage dialog, the document page
        page = client_a.get(f"/knowledge/{kb.pk}/documents/{document.pk}/?chunk={last.position}", **headers)
        html = page.content.decode()
        assert page.status_code == 200 and f'id="passage-{last.position}" class="passage highlighted"' in html
        assert html.count('<p id="passage-') == views.PASSAGES_SHOWN // 2 + 1  # the passages before it, and it
    first = client_a.get(f"/knowledge/{kb.pk}/documents/{document.pk}/").content.decode()
    assert 'id="passage-0"' in first and first.count('<p id="passage-') == views.PASSAGES_SHOWN
