"""A chat that reads well, in a real browser against daphne and the Celery workers: answers rendered from Markdown
while a document's script payloads stay inert, copy buttons, Regenerate offering switchable alternatives, and
citations naming the page of a PDF and the section of a Markdown file.

The knowledge bases are set up through the services (committed, ingested by the real worker); everything after
that is what a person does in the page."""

from __future__ import annotations

import datetime as dt
import io
import re
import time

import pytest
from playwright.sync_api import expect

from agents.providers.offline import NOTHING_FOUND
from knowledge.tests.factories import make_pdf

from .conftest import committed, login
from .test_journeys import _ask_and_wait

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db]

# Both sentences answer the question, so the offline provider's extract carries their payloads; none may run.
XSS_DOC = (
    "# Zephyr handbook\n\n"
    "The Zephyr cooling loop runs at **42 degrees** during normal operation "
    "<img src=x onerror=\"window.__xss='img'; alert('img')\"> <script>window.__xss='script'</script> and is "
    "started with `zephyr-ctl start`, as the [cooling loop manual](javascript:window.__xss='link') explains to "
    "every operator of the plant.\n"
    "The operators read the temperature of the Zephyr cooling loop on "
    "<a href=\"javascript:window.__xss='anchor'\">the console</a> in the control room every morning.\n\n"
    "The canteen serves soup on Fridays.\n"
)
QUESTION = "At what temperature does the Zephyr cooling loop run?"
CODE_ANSWER = (
    "Install it in two steps:\n\n"
    "1. Update the index.\n"
    "2. Install the package:\n\n"
    "```sh\nsudo apt-get install -y zephyr-tools\n```\n\n"
    "Then run `zephyr-ctl start`."
)


def _setup(slug: str, email: str, files: dict[str, bytes] | None = None, *, stored_answer: str = "") -> dict:
    """An agent over a knowledge base holding `files` (ingested by the worker), and optionally a conversation
    whose stored answer is `stored_answer`. Committed, so daphne and the worker see it."""
    from django.utils import timezone
    from django_tenants.utils import tenant_context

    from accounts.models import User
    from agents.models import Conversation, Message
    from agents.services import agent_create
    from iam.policy import Principal
    from knowledge.services import Upload, documents_ingest, knowledge_base_create
    from tenants.models import Tenant

    def make() -> dict:
        tenant = Tenant.objects.get(slug=slug)
        user = User.objects.get(email=email)
        with tenant_context(tenant):
            principal = Principal(tenant=tenant, user=user, role="admin")
            kb_ids, document_ids = [], []
            if files:
                kb = knowledge_base_create(principal=principal, name="Handbooks")
                uploads = [Upload(title=name, file=io.BytesIO(data), filename=name) for name, data in files.items()]
                document_ids = [d.pk for d in documents_ingest(kb=kb, user=user, uploads=uploads).documents]
                kb_ids = [kb.pk]
            agent = agent_create(
                principal=principal, data={"name": "Reader", "agent_type": "rag", "knowledge_base_ids": kb_ids}
            )
            conversation_id = ""
            if stored_answer:
                conversation = Conversation.objects.create(agent=agent, user=user, title="Install")
                now = timezone.now()
                Message.objects.create(created=now, conversation=conversation, role="user", content="How?")
                Message.objects.create(
                    created=now + dt.timedelta(microseconds=1),
                    conversation=conversation,
                    role="assistant",
                    content=stored_answer,
                    status="complete",
                )
                conversation_id = str(conversation.pk)
        return {"tenant": tenant, "agent_id": agent.pk, "documents": document_ids, "conversation": conversation_id}

    return committed(make)


def _wait_until_ingested(world: dict, timeout: float = 120) -> None:
    from django_tenants.utils import tenant_context

    from knowledge.models import Document

    def statuses() -> list[str]:
        with tenant_context(world["tenant"]):
            return list(Document.objects.filter(pk__in=world["documents"]).values_list("status", flat=True))

    deadline = time.monotonic() + timeout
    while (current := committed(statuses)) != ["ready"] * len(world["documents"]):
        assert "failed" not in current and time.monotonic() < deadline, current
        time.sleep(0.3)


def _nothing_executed(page, dialogs: list[str]) -> None:
    assert page.evaluate("() => window.__xss") is None
    assert dialogs == []
    body = page.locator(".msg.assistant .body")
    expect(body.locator("img, script, iframe, svg")).to_have_count(0)
    for href in body.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))"):
        assert href is None or href.startswith(("http://", "https://")), href


def test_markdown_renders_a_documents_xss_stays_inert_and_regenerate_switches(
    page, console, app_server, org_factory, celery_worker_process
):
    slug, email = org_factory("reads")
    world = _setup(slug, email, {"zephyr.md": XSS_DOC.encode()})
    _wait_until_ingested(world)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    login(page, app_server, slug, email)
    page.goto(app_server.url(slug, f"/agents/{world['agent_id']}/chat/"))

    answer = _ask_and_wait(page, QUESTION)
    body = answer.locator(".body.rendered")  # swapped in once the answer is stored
    expect(body.locator("strong")).to_have_text("42 degrees")
    expect(body.locator("code")).to_have_text("zephyr-ctl start")
    expect(body).to_contain_text("cooling loop manual")  # the link's text stays, as text
    expect(body).to_contain_text("onerror")  # the payloads did reach the answer: shown as text, never as markup
    _nothing_executed(page, dialogs)
    # The chip names the file and the section the passage is in.
    expect(answer.locator("button.citation")).to_have_count(1)
    expect(answer.locator("button.citation")).to_contain_text(re.compile(r"zephyr\.md · Zephyr handbook"))

    # Copy answer puts the answer's Markdown on the clipboard.
    answer.get_by_role("button", name="Copy answer").click()
    expect(answer.get_by_role("button", name="Copy answer")).to_have_attribute("data-copied", "true")
    assert "**42 degrees**" in page.evaluate("() => navigator.clipboard.readText()")

    # Regenerate adds an alternative to the same answer instead of stacking a new one.
    first_id = answer.get_attribute("data-message")
    page.get_by_role("button", name="Regenerate").click()
    expect(answer).to_have_attribute("data-status", "complete", timeout=60_000)
    expect(answer.locator(".alt-count")).to_have_text("2/2")
    expect(page.locator(".msg.assistant")).to_have_count(1)
    expect(page.locator(".msg.user")).to_have_count(1)
    second_id = answer.get_attribute("data-message")
    assert second_id and second_id != first_id
    expect(answer.locator(".body.rendered strong")).to_have_text("42 degrees")
    answer.get_by_role("button", name="Previous answer").click()
    expect(answer.locator(".alt-count")).to_have_text("1/2")
    expect(answer).to_have_attribute("data-message", first_id)
    expect(answer.locator(".body.rendered strong")).to_have_text("42 degrees")
    answer.get_by_role("button", name="Next answer").click()
    expect(answer).to_have_attribute("data-message", second_id)

    # Reloaded, the stored conversation shows the same: one answer, two alternatives, rendered, inert.
    page.reload()
    expect(page.locator("#chat")).to_have_attribute("data-ready", "true")
    stored = page.locator(".msg.assistant")
    expect(stored).to_have_count(1)
    expect(stored.locator(".alt-count")).to_have_text("2/2")
    expect(stored.locator(".body.rendered strong")).to_have_text("42 degrees")
    _nothing_executed(page, dialogs)


def test_a_pdf_citation_names_its_page(page, console, app_server, org_factory, celery_worker_process):
    slug, email = org_factory("pages")
    # Pages long enough to be a passage each (the default chunk size); only page 2 is about the crane.
    filler = "The {0} log entry {1} records routine checks of the {0} area by the day shift."
    pdf = make_pdf(
        [
            [first, *(filler.format(topic, k) for k in range(9))]
            for topic, first in [
                ("gate", "Harbour operations manual."),
                ("crane", "The harbour crane lifts at most forty tonnes in calm weather."),
                ("berth", "Ships moor at the northern berths after sunset."),
            ]
        ]
    )
    world = _setup(slug, email, {"harbour.pdf": pdf})
    _wait_until_ingested(world)
    login(page, app_server, slug, email)
    page.goto(app_server.url(slug, f"/agents/{world['agent_id']}/chat/"))
    answer = _ask_and_wait(page, "How many tonnes does the harbour crane lift?")
    expect(answer.locator(".body")).to_contain_text("forty tonnes")
    expect(answer.locator("button.citation", has_text=re.compile(r"^\[\d+\] harbour\.pdf · p\. 2$"))).to_have_count(1)
    # An answer that found nothing relevant shows no chips at all.
    nothing = _ask_and_wait(page, "Which team won the chess olympiad in 1956?")
    expect(nothing.locator(".body")).to_contain_text(NOTHING_FOUND)
    expect(nothing.locator("button.citation")).to_have_count(0)


def test_code_blocks_and_answers_have_copy_buttons(page, console, app_server, org_factory):
    slug, email = org_factory("copy")
    world = _setup(slug, email, stored_answer=CODE_ANSWER)
    login(page, app_server, slug, email)
    page.goto(app_server.url(slug, f"/agents/{world['agent_id']}/chat/?c={world['conversation']}"))
    answer = page.locator(".msg.assistant")
    expect(answer.locator(".body.rendered ol li")).to_have_count(2)
    code = answer.locator(".body.rendered pre")
    expect(code.locator("code")).to_have_text("sudo apt-get install -y zephyr-tools\n")
    code.get_by_role("button", name="Copy code").click()
    assert page.evaluate("() => navigator.clipboard.readText()") == "sudo apt-get install -y zephyr-tools\n"
    answer.get_by_role("button", name="Copy answer").click()
    expect(page.locator("#chat-status")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("() => navigator.clipboard.readText()") == CODE_ANSWER
    expect(answer.locator(".alternatives")).to_be_hidden()  # one answer: no switcher
