"""`make screenshots`: PNGs of the main pages into docs/screenshots/ (referenced from the README).

Skipped in the normal suite; it is a tool, not a check (the journeys are the checks). It drives the real
product (daphne, the Celery worker) to fill the pages with real data first."""

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from .conftest import login
from .test_journeys import FACT_DOC, OTHER_DOC, drop_files

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db,
    pytest.mark.skipif(not os.environ.get("AGENTRY_SCREENSHOTS"), reason="writes docs/screenshots: `make screenshots`"),
]
OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def shoot(page, name: str, *, dark: bool = False, full: bool = True) -> None:
    page.evaluate(
        "t => { document.documentElement.setAttribute('data-theme', t); localStorage.setItem('agentry-theme', t); }",
        "dark" if dark else "light",
    )
    page.wait_for_timeout(250)
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=full)


def test_screenshots(page, console, app_server, org_factory, celery_worker_process):
    OUT.mkdir(parents=True, exist_ok=True)
    page.goto(app_server.url())
    shoot(page, "landing")
    shoot(page, "landing-dark", dark=True)
    page.goto(app_server.url(path="/signup/"))
    shoot(page, "signup")
    slug, email = org_factory("demo", name="Demo Org")
    page.goto(app_server.url(slug, "/accounts/login/"))
    shoot(page, "login")
    login(page, app_server, slug, email)

    # Knowledge: a base with two documents.
    page.goto(app_server.url(slug, "/knowledge/"))
    shoot(page, "knowledge-empty")
    page.get_by_label("Name").fill("Handbooks")
    page.get_by_label("Description").fill("Operating manuals and the canteen menu.")
    page.get_by_role("button", name="Create knowledge base").click()
    drop_files(page, "#dropzone", {"zephyr.md": FACT_DOC, "canteen.md": OTHER_DOC})
    for name in ("zephyr.md", "canteen.md"):
        expect(page.locator("#upload-list li", has_text=name)).to_have_attribute("data-state", "ready", timeout=120_000)
    shoot(page, "knowledge-documents")
    kb_url = page.url
    page.goto(kb_url + "search/?q=cooling+loop+temperature&mode=hybrid&k=5")
    shoot(page, "knowledge-search")

    # Agents: create, change, compare versions.
    page.goto(app_server.url(slug, "/agents/new/"))
    page.get_by_label("Name", exact=True).fill("Reactor expert")
    page.get_by_label("Description").fill("Answers questions about the Zephyr reactor.")
    page.get_by_label("System prompt").fill("Answer from the handbook.\nCite your sources.")
    page.get_by_label("Handbooks").check()
    page.get_by_role("button", name="Create agent").click()
    page.get_by_label("System prompt").fill("Answer only from the handbook.\nCite your sources.\nBe brief.")
    page.get_by_label("What changed").fill("Stricter prompt")
    page.get_by_role("button", name="Save as new version").click()
    shoot(page, "agent-editor")
    page.get_by_role("button", name="Version history").click()
    shoot(page, "agent-versions-diff")
    page.goto(app_server.url(slug, "/agents/"))
    shoot(page, "agents-list")

    # Chat with a cited answer, its source passage open.
    page.get_by_role("button", name="Chat").first.click()
    expect(page.locator("#chat")).to_have_attribute("data-ready", "true")
    page.get_by_role("textbox", name="Message").fill("At what temperature does the Zephyr cooling loop run?")
    page.get_by_role("textbox", name="Message").press("Enter")
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-status", "complete", timeout=60_000)
    shoot(page, "chat")
    shoot(page, "chat-dark", dark=True)
    page.locator("button.citation").first.click()
    expect(page.locator("#passage-dialog .highlighted")).to_be_visible()
    shoot(page, "chat-citation", full=False)
    page.keyboard.press("Escape")

    # Admin.
    page.goto(app_server.url(slug, "/manage/members/"))
    page.get_by_label("Email address").fill(f"new.hire@{slug}.test")
    page.get_by_label("Role", exact=True).select_option("readonly")
    page.get_by_role("button", name="Send invitation").click()
    shoot(page, "admin-members")
    page.goto(app_server.url(slug, "/api-keys/"))
    page.get_by_label("Name").fill("Support bot")
    page.get_by_label("chat").check()
    page.get_by_role("button", name="Create key").click()
    shoot(page, "api-key-created")
    page.goto(app_server.url(slug, "/manage/usage/"))
    shoot(page, "admin-usage")
    page.goto(app_server.url(slug, "/manage/audit/"))
    shoot(page, "admin-audit")
    page.goto(app_server.url(slug, "/profile/"))
    shoot(page, "profile")
    page.goto(app_server.url(slug, "/"))
    shoot(page, "dashboard")

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(app_server.url(slug, "/agents/"))
    shoot(page, "agents-phone")
    page.go_back()
    page.goto(app_server.url(slug, "/chat/?pick=1"))
    shoot(page, "chat-home-phone")
