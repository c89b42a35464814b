"""The issue's main journeys in a real browser against real processes: daphne (HTTP + WebSocket), the Celery
worker (ingestion and agent runs), PostgreSQL and Redis. Nothing is mocked; the LLM is the built-in offline
provider, which answers from the retrieved passages with citations."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from agents.providers.offline import NOTHING_FOUND
from conftest import PASSWORD

from .conftest import login, unique_slug

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db]

FACT_DOC = (
    "# Zephyr reactor handbook\n\n"
    "The Zephyr reactor cooling loop runs at 42 degrees Celsius during normal operation.\n\n"
    "Maintenance of the loop happens every second Tuesday, after the weekly safety review.\n"
)
OTHER_DOC = "# Canteen\n\nThe canteen serves soup on Fridays.\n"


def drop_files(page, selector: str, files: dict[str, str]) -> None:
    """A real drop event carrying File objects, as a person dragging files from their desktop produces."""
    expect(page.locator("#uploader")).to_have_attribute("data-ready", "true")  # upload.js is listening
    data_transfer = page.evaluate_handle(
        """files => { const dt = new DataTransfer();
            for (const [name, text] of Object.entries(files)) {
                dt.items.add(new File([text], name, {type: "text/markdown"})); }
            return dt; }""",
        files,
    )
    page.dispatch_event(selector, "dragenter", {"dataTransfer": data_transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": data_transfer})


def sign_up_and_verify(page, server, slug: str, email: str) -> None:
    page.goto(server.url(path="/signup/"))
    page.get_by_label("Organisation name").fill("Zephyr Labs")
    page.get_by_label("Address").fill(slug)
    page.get_by_label("Your email").fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Create organisation").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Zephyr Labs is ready")
    page.get_by_role("button", name="Go to your organisation").click()
    # First login with an unverified address: the verification mail goes out and the page says so.
    page.get_by_label(re.compile("^Email", re.I)).fill(email)
    page.get_by_label(re.compile("^Password", re.I)).fill(PASSWORD)
    page.get_by_role("button", name=re.compile("sign in", re.I)).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(re.compile("verify", re.I))
    link = server.wait_for_link(email, r"http://[^\s\"<>]+/accounts/confirm-email/[^\s\"<>]+")
    page.goto(link)
    page.get_by_role("button", name=re.compile("confirm", re.I)).click()
    page.goto(server.url(slug, "/"))
    if "/accounts/login/" in page.url:  # depending on allauth settings, confirming may not log you in
        login(page, server, slug, email)
    expect(page.get_by_role("heading", level=1)).to_contain_text("Zephyr Labs")


def test_sign_up_verify_create_agent_upload_and_chat_with_citation(page, console, app_server, celery_worker_process):
    slug = unique_slug("zephyr")
    email = f"owner@{slug}.test"
    sign_up_and_verify(page, app_server, slug, email)

    # A knowledge base, two files dropped at once, one progress bar each reaching 100%.
    page.get_by_role("link", name="Knowledge", exact=True).click()
    page.get_by_label("Name").fill("Handbooks")
    page.get_by_role("button", name="Create knowledge base").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Handbooks")
    drop_files(page, "#dropzone", {"zephyr.md": FACT_DOC, "canteen.md": OTHER_DOC, "empty.md": ""})
    bars = page.locator("#upload-list progress")
    expect(bars).to_have_count(3)
    console.allow(r"status of 422")  # the browser's own note about the refused empty file
    refused = page.locator("#upload-list li", has_text="empty.md")
    expect(refused).to_have_attribute("data-state", "failed")
    expect(refused).to_contain_text("empty")  # the reason, in words
    for name in ("zephyr.md", "canteen.md"):
        row = page.locator("#upload-list li", has_text=name)
        expect(row).to_have_attribute("data-state", "ready", timeout=120_000)
        expect(row.locator("progress")).to_have_attribute("value", "100")
    assert page.locator("#uploader").get_attribute("data-live") == "ws"  # live from the event bus
    expect(page.locator("#documents")).to_contain_text("zephyr.md")

    # An agent over that knowledge base (offline provider by default).
    page.get_by_role("link", name="Agents", exact=True).click()
    page.get_by_role("button", name="Create your first agent").click()
    page.get_by_label("Name", exact=True).fill("Reactor expert")
    page.get_by_label("System prompt").fill("Answer from the handbook.")
    page.get_by_label("Handbooks").check()
    page.get_by_role("button", name="Create agent").click()
    expect(page.get_by_text("Agent “Reactor expert” created.")).to_be_visible()

    # Chat: tokens stream in over the WebSocket and the answer cites the uploaded document.
    page.get_by_role("link", name="Chat", exact=True).click()
    page.get_by_role("button", name="Chat with Reactor expert").click()
    expect(page.locator("#chat")).to_have_attribute("data-ready", "true")
    page.get_by_role("textbox", name="Message").fill("At what temperature does the Zephyr cooling loop run?")
    page.get_by_role("textbox", name="Message").press("Enter")
    answer = page.locator(".msg.assistant").last
    expect(answer).to_have_attribute("data-status", "complete", timeout=60_000)
    expect(answer.locator(".body")).to_contain_text("42 degrees")
    assert int(answer.get_attribute("data-tokens")) > 5  # arrived token by token, not as one block
    citation = answer.locator("button.citation").first
    expect(citation).to_contain_text("zephyr.md")
    assert page.locator("#chat").get_attribute("data-transport") == "ws"
    citation.click()
    dialog = page.locator("#passage-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator(".passage.highlighted")).to_contain_text("42 degrees")


def test_admin_invites_a_readonly_member_who_cannot_edit(page, console, browser, app_server, org_factory):
    slug, admin_email = org_factory("invite", name="Invite Co")
    login(page, app_server, slug, admin_email)
    page.goto(app_server.url(slug, "/agents/new/"))
    page.get_by_label("Name", exact=True).fill("Shared helper")
    page.get_by_label("Who in the organisation can use it").select_option("viewer")
    page.get_by_role("button", name="Create agent").click()
    expect(page.get_by_text("Agent “Shared helper” created.")).to_be_visible()
    agent_url = page.url

    page.get_by_role("link", name="Admin", exact=True).click()
    member_email = f"reader@{slug}.test"
    page.get_by_label("Email address").fill(member_email)
    page.get_by_label("Role", exact=True).select_option("readonly")
    page.get_by_role("button", name="Send invitation").click()
    expect(page.get_by_text(f"Invitation sent to {member_email} as Read-only.")).to_be_visible()
    link = app_server.wait_for_link(member_email, r"http://[^\s\"<>]+/invitations/[^\s\"<>]+/")

    # The invitee, in their own browser context (own cookies).
    context = browser.new_context(viewport={"width": 390, "height": 844})  # and on a phone-sized screen
    reader = context.new_page()
    console.watch(reader)
    reader.goto(link)
    reader.get_by_label("Name").fill("Rita Reader")
    reader.get_by_label("Choose a password").fill(PASSWORD)
    reader.get_by_role("button", name="Create my account and join").click()
    expect(reader.get_by_text("with the role Read-only")).to_be_visible()

    reader.goto(agent_url)
    expect(reader.get_by_text("You can view this agent but not change it")).to_be_visible()
    expect(reader.get_by_label("Name", exact=True)).to_be_disabled()
    expect(reader.get_by_role("button", name="Save as new version")).to_have_count(0)
    reader.goto(app_server.url(slug, "/agents/"))
    expect(reader.get_by_text("Shared helper")).to_be_visible()
    expect(reader.get_by_role("button", name="New agent")).to_have_count(0)
    # Even a hand-made request is refused by the server, not just hidden in the page.
    console.allow(r"status of 403")
    status = reader.evaluate(
        """async url => { const csrf = JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRFToken'];
            const body = new URLSearchParams({name: 'Hacked', agent_type: 'rag', org_access: 'viewer'});
            const r = await fetch(url, {method: 'POST', body, headers: {'X-CSRFToken': csrf}});
            return r.status; }""",
        agent_url,
    )
    assert status == 403
    context.close()
    page.goto(agent_url)
    expect(page.get_by_label("Name", exact=True)).to_have_value("Shared helper")


def test_api_key_is_shown_once_and_works_against_the_api(page, console, app_server, org_factory):
    slug, email = org_factory("keys", name="Keys Inc")
    login(page, app_server, slug, email)
    page.locator(".user-menu summary").click()  # the account menu
    page.get_by_role("link", name="API keys").click()
    page.get_by_label("Name").fill("CI pipeline")
    page.get_by_label("chat").check()
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_text("it is shown only this once")).to_be_visible()
    secret = page.get_by_label("API key").input_value()
    assert secret.startswith("agk_")
    page.get_by_role("button", name="Copy key").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == secret

    me = app_server.api(slug, "GET", "/api/v1/me/", headers={"Authorization": f"Api-Key {secret}"})
    assert me.status_code == 200, me.text
    assert me.json()["email"] == email

    # Never shown again: the list has the prefix only, and no page holds the secret.
    page.get_by_role("link", name=re.compile("back to API keys")).click()
    expect(page.get_by_role("cell", name="CI pipeline")).to_be_visible()
    assert secret not in page.content()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke").click()
    expect(page.get_by_text("revoked", exact=True)).to_be_visible()
    refused = app_server.api(slug, "GET", "/api/v1/me/", headers={"Authorization": f"Api-Key {secret}"})
    assert refused.status_code == 401


def _make_agent(page, server, slug: str, name: str, agent_type: str = "rag") -> str:
    page.goto(server.url(slug, "/agents/new/"))
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Agent type").select_option(agent_type)
    page.get_by_role("button", name="Create agent").click()
    expect(page.get_by_text(f"Agent “{name}” created.")).to_be_visible()
    return page.url.rstrip("/") + "/chat/"


def _ask_and_wait(page, question: str):
    expect(page.locator("#chat")).to_have_attribute("data-ready", "true")
    page.get_by_role("textbox", name="Message").fill(question)
    page.get_by_role("textbox", name="Message").press("Enter")
    answer = page.locator(".msg.assistant").last
    expect(answer).to_have_attribute("data-status", "complete", timeout=60_000)
    return answer


def _stored_answer(page) -> str:
    """The assistant message as the server stored it (the reference for 'nothing lost, nothing repeated')."""
    return page.evaluate(
        """async () => { const c = document.getElementById('chat').dataset.conversation;
            const r = await fetch(`/api/v1/conversations/${c}/messages/`, {headers: {Accept: 'application/json'}});
            const body = await r.json(); const rows = body.results || body.messages || body;
            return rows.filter(m => m.role === 'assistant').pop().content; }"""
    )


def test_dropped_websocket_resumes_without_losing_or_repeating_tokens(
    page, console, app_server, org_factory, celery_worker_process
):
    slug, email = org_factory("resume", name="Resume Ltd")
    login(page, app_server, slug, email)
    chat_url = _make_agent(page, app_server, slug, "Steady streamer")

    # Between the server and the page, drop the connection in the middle of the answer: the third token is
    # lost in transit, never delivered. Later connections pass through untouched.
    dropped = {"done": False, "tokens_before_drop": 0}

    def middlebox(ws):
        server = ws.connect_to_server()

        def to_page(message):
            if not dropped["done"] and '"type": "token"' in str(message):
                if dropped["tokens_before_drop"] == 2:
                    dropped["done"] = True
                    ws.close(code=4000, reason="network dropped")
                    server.close()
                    return
                dropped["tokens_before_drop"] += 1
            ws.send(message)

        server.on_message(to_page)
        ws.on_message(lambda message: server.send(message))

    page.route_web_socket(re.compile(r"/ws/agents/\d+/chat/"), middlebox)
    page.goto(chat_url)
    answer = _ask_and_wait(page, "What does the handbook say about reactors?")
    assert dropped["done"], "the connection was never dropped mid-answer"
    chat = page.locator("#chat")
    expect(chat).to_have_attribute("data-resumes", "1")
    expect(chat).to_have_attribute("data-transport", "ws")
    shown = answer.locator(".body").inner_text()
    assert shown == _stored_answer(page)
    assert len(shown.split()) > 3

    # Regenerate answers again: a second alternative of the same answer, switchable (2/2), not a second answer.
    page.get_by_role("button", name="Regenerate").click()
    expect(answer).to_have_attribute("data-status", "complete", timeout=60_000)
    expect(page.locator(".msg.assistant")).to_have_count(1)
    expect(answer.locator(".alt-count")).to_have_text("2/2")
    assert answer.locator(".body").inner_text() == _stored_answer(page)


def test_chat_falls_back_to_sse_then_long_polling(page, console, app_server, org_factory, celery_worker_process):
    slug, email = org_factory("fallback", name="Fallback Ltd")
    login(page, app_server, slug, email)
    chat_url = _make_agent(page, app_server, slug, "Patient streamer", agent_type="tools")
    # A network where WebSocket handshakes fail (a proxy that does not upgrade connections).
    page.add_init_script(
        """window.WebSocket = class { constructor() { this.readyState = 3;
            setTimeout(() => { this.onclose && this.onclose({code: 1006}); }, 10); }
            send() { throw new Error('not connected'); } close() {} };"""
    )
    page.goto(chat_url)
    answer = _ask_and_wait(page, "Anything about reactors?")
    expect(page.locator("#chat")).to_have_attribute("data-transport", "sse")
    expect(answer.locator(".steps")).to_contain_text("knowledge_search")  # the tool step, shown as it happened
    assert answer.locator(".body").inner_text() == _stored_answer(page)

    # ... and where server-sent events do not get through either: long-polling.
    console.allow(r"status of 503|EventSource")
    page.route(
        re.compile(r"/api/v1/runs/.+/events/"),
        lambda route: (
            route.fulfill(status=503, body="")
            if "text/event-stream" in (route.request.headers.get("accept") or "")
            else route.continue_()
        ),
    )
    page.reload()
    answer = _ask_and_wait(page, "Anything about cooling?")
    expect(page.locator("#chat")).to_have_attribute("data-transport", "poll")
    assert answer.locator(".body").inner_text() == _stored_answer(page)


def test_stop_ends_the_answer_on_the_server_and_keeps_what_was_written(
    page, console, app_server, org_factory, celery_worker_process
):
    slug, email = org_factory("stop", name="Stop Ltd")
    login(page, app_server, slug, email)
    chat_url = _make_agent(page, app_server, slug, "Slow talker")
    agent_id = re.search(r"/agents/(\d+)/", chat_url).group(1)
    page.goto(chat_url)
    slowed = page.evaluate(
        """async (id) => { const csrf = JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRFToken'];
            const r = await fetch(`/api/v1/agents/${id}/`, {method: 'PATCH', credentials: 'same-origin',
              headers: {'Content-Type': 'application/json', 'X-CSRFToken': csrf},
              body: JSON.stringify({sampling: {stream_delay_ms: 250}})});
            return r.status; }""",
        agent_id,
    )
    assert slowed == 200  # the offline model now writes 4 words a second
    expect(page.locator("#chat")).to_have_attribute("data-ready", "true")
    page.get_by_role("textbox", name="Message").fill("Tell me everything")
    page.get_by_role("textbox", name="Message").press("Enter")
    answer = page.locator(".msg.assistant").last
    expect(answer.locator(".body")).not_to_have_text("", timeout=30_000)
    page.get_by_role("button", name="Stop").click()
    expect(answer).to_have_attribute("data-status", "stopped", timeout=10_000)
    stored = page.evaluate(
        """async () => { const c = document.getElementById('chat').dataset.conversation;
            const r = await fetch(`/api/v1/conversations/${c}/messages/`, {headers: {Accept: 'application/json'}});
            const body = await r.json(); const rows = body.results || body.messages || body;
            return rows.filter(m => m.role === 'assistant').pop(); }"""
    )
    assert stored["status"] == "incomplete" and stored["error"]["code"] == "cancelled"
    shown = answer.locator(".body").inner_text()
    assert shown == stored["content"]  # what the reader saw is what the conversation keeps
    assert shown and NOTHING_FOUND.startswith(shown.strip()) and shown.strip() != NOTHING_FOUND  # cut short
