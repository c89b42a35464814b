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
