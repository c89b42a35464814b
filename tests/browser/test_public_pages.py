"""The public site, login and error pages in a real browser: styled, keyboard-usable, no JavaScript errors."""

import re

import pytest
from playwright.sync_api import expect

from .conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db]


def test_landing_login_dashboard_theme_and_error_pages(page, console, app_server, org_factory):
    page.goto(app_server.url())
    expect(page.get_by_role("heading", level=1)).to_have_text("AI agents over your own knowledge")
    # Assets come from static/vendor (npm), not a CDN: Pico's variables are applied.
    assert page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--pico-primary')").strip()
    assert page.evaluate("typeof window.htmx") == "object"

    # Keyboard: the first Tab lands on the skip link, which is visible when focused.
    page.keyboard.press("Tab")
    expect(page.locator(".skip-link")).to_be_focused()

    # Theme toggle switches to the other theme and remembers it across pages.
    before = page.evaluate(
        "document.documentElement.dataset.theme || "
        "(matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light')"
    )
    page.get_by_role("button", name=re.compile("theme", re.I)).click()
    after = page.evaluate("document.documentElement.dataset.theme")
    assert after != before
    page.goto(app_server.url(path="/signup/"))
    assert page.evaluate("document.documentElement.dataset.theme") == after
    for label in ("Organisation name", "Address", "Your email", "Password"):
        expect(page.get_by_label(label, exact=True)).to_be_visible()

    # Unknown organisation and missing pages answer with friendly pages, never a stack trace.
    console.allow(r"Failed to load resource: the server responded with a status of 404")
    page.goto(app_server.url("no-such-org"))
    expect(page.get_by_role("heading", name="Organisation not found")).to_be_visible()

    slug, email = org_factory("smoke", name="Smoke Test Ltd")
    login(page, app_server, slug, email)
    expect(page.get_by_role("heading", level=1)).to_contain_text("Smoke Test Ltd")
    page.goto(app_server.url(slug, "/this/does/not/exist/"))
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    assert "Traceback" not in page.content()


UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
    .filter(e => e.type !== 'hidden' && !(e.labels && e.labels.length)
                 && !e.getAttribute('aria-label') && !e.getAttribute('aria-labelledby'))
    .map(e => e.outerHTML.slice(0, 120))"""


def test_every_form_control_is_labelled_and_keyboard_focus_is_visible(page, console, app_server, org_factory):
    slug, email = org_factory("a11y", name="Labels Ltd")
    login(page, app_server, slug, email)
    page.goto(app_server.url(slug, "/agents/new/"))
    page.get_by_label("Name", exact=True).fill("Labelled agent")
    page.get_by_role("button", name="Create agent").click()
    agent_path = page.url.split(str(app_server.port), 1)[1]
    paths = [
        "/",
        "/agents/",
        "/agents/new/",
        agent_path,
        agent_path + "chat/",
        "/knowledge/",
        "/manage/members/",
        "/manage/teams/",
        "/manage/providers/",
        "/manage/webhooks/",
        "/manage/usage/",
        "/manage/audit/",
        "/api-keys/",
        "/profile/",
    ]
    for path in paths:
        page.goto(app_server.url(slug, path))
        assert page.evaluate(UNLABELLED) == [], path
        assert "Traceback" not in page.content()
    for url in (app_server.url(path="/signup/"), app_server.url(slug, "/accounts/login/")):
        page.context.clear_cookies()
        page.goto(url)
        assert page.evaluate(UNLABELLED) == [], url
    # A keyboard user sees where they are: the focused control gets an outline or a focus ring.
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    ring = page.evaluate(
        "() => { const s = getComputedStyle(document.activeElement);"
        " return s.outlineStyle !== 'none' || s.boxShadow !== 'none'; }"
    )
    assert ring
