"""A knowledge base's settings page in a real browser against daphne and the Celery workers: the OCR language
edited, search tuned on the knowledge base's own documents by the worker ("tuned on N questions from your
documents: MRR a → b"), reset to the defaults and tuned again with the page's buttons.

The knowledge base is set up through the services (committed, ingested in this process so that no automatic
tuning is queued); everything after that is what its owner does in the page."""

from __future__ import annotations

import io
import re

import pytest
from playwright.sync_api import expect

from knowledge.tests.test_tuning import howto_documents

from .conftest import committed, login

# Two tunings by the worker (the grid over every question, twice): minutes on a loaded 2-core machine.
pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db, pytest.mark.timeout(600)]

FIGURE = re.compile(r"Tuned on (\d+) questions from your documents: MRR (\d\.\d\d) → (\d\.\d\d)")


def _knowledge_base(slug: str, email: str) -> dict:
    from django_tenants.utils import tenant_context

    from accounts.models import User
    from iam.policy import Principal
    from knowledge import pipeline
    from knowledge.services import Upload, documents_ingest, knowledge_base_create
    from tenants.models import Tenant

    def make() -> dict:
        tenant = Tenant.objects.get(slug=slug)
        user = User.objects.get(email=email)
        with tenant_context(tenant):
            kb = knowledge_base_create(principal=Principal(tenant=tenant, user=user, role="admin"), name="HOWTOs")
            uploads = [
                Upload(title=name, file=io.BytesIO(text.encode()), filename=name)
                for name, text in howto_documents(16).items()
            ]
            for document in documents_ingest(kb=kb, user=user, uploads=uploads).documents:
                assert pipeline.document_process(document.pk)
        return {"tenant": tenant, "kb_id": kb.pk}

    return committed(make)


def _stored(world: dict) -> tuple[dict, bool]:
    from django_tenants.utils import tenant_context

    from knowledge.models import KnowledgeBase
    from knowledge.tuning import tuning_status

    def read() -> tuple[dict, bool]:
        with tenant_context(world["tenant"]):
            kb = KnowledgeBase.objects.get(pk=world["kb_id"])
            return tuning_status(kb=kb).record, kb.auto_tune

    return committed(read)


def _wait_for_figure(page) -> re.Match:
    panel = page.locator("#tuning")
    expect(panel).to_have_attribute("data-running", "false", timeout=240_000)  # the worker measured the grid
    expect(panel).to_have_attribute("data-status", re.compile("^(tuned|default)$"))
    figure = FIGURE.search(page.locator("#tuning-figure").inner_text())
    assert figure, page.locator("#tuning-figure").inner_text()
    return figure


def test_owner_edits_ocr_language_tunes_resets_and_retunes_search(
    page, console, app_server, org_factory, celery_worker_process
):
    slug, email = org_factory("tuning")
    world = _knowledge_base(slug, email)
    login(page, app_server, slug, email)
    page.goto(app_server.url(slug, f"/knowledge/{world['kb_id']}/"))
    page.get_by_role("link", name="Settings", exact=True).click()

    # The OCR language is a setting of the knowledge base like its name.
    expect(page.get_by_label("OCR language")).to_have_value("eng")
    page.get_by_label("OCR language").fill("klingon")
    console.allow(r"status of 400")  # the browser's own note about the refused form
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("alert")).to_contain_text("not installed")
    page.get_by_label("OCR language").fill("eng")
    page.get_by_label("Description").fill("Python HOWTO sections")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_text("Settings saved.")).to_be_visible()

    # Tune: the worker makes questions from the documents and measures; the panel follows without a reload.
    expect(page.locator("#tuning-figure")).to_contain_text("Not tuned yet")
    page.get_by_role("button", name="Tune now").click()
    figure = _wait_for_figure(page)
    record, auto_tune = _stored(world)
    assert auto_tune and int(figure.group(1)) == record["questions"]
    assert (float(figure.group(2)), float(figure.group(3))) == (
        round(record["mrr_default"], 2),
        round(record["mrr_tuned"], 2),
    )
    page.get_by_text("Every setting tried").click()
    expect(page.locator("#tuning table tbody tr")).to_have_count(len(record["grid"]))

    # Reset: back to the defaults, and documents added later no longer re-tune.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Reset to defaults").click()
    expect(page.locator("#tuning")).to_have_attribute("data-status", "reset")
    expect(page.locator("#tuning-figure")).to_contain_text("Search uses the default settings")
    record, auto_tune = _stored(world)
    assert record["status"] == "reset" and record["settings"] == {} and not auto_tune

    # Re-tune: the same figures again (same documents), automatic tuning back on.
    page.get_by_role("button", name="Re-tune now").click()
    again = _wait_for_figure(page)
    assert again.groups() == figure.groups()
    assert _stored(world)[1]
