"""The dashboard works under its Content-Security-Policy: the main pages load, their scripts run (theme, htmx,
Chart.js, the chat's WebSocket, the webhook filter) and the browser reports no violation. The `console` fixture
fails the test on any error, and CSP violations are reported as errors (conftest.CSP_VIOLATION_REPORTER)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from .conftest import login
from .test_journeys import _ask_and_wait, _make_agent

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db]
MAIN_PAGES = [
    "/",
    "/agents/",
    "/agents/new/",
    "/chat/",
    "/knowledge/",
    "/manage/members/",
    "/manage/teams/",
    "/manage/providers/",
    "/manage/usage/",
    "/manage/audit/",
    "/manage/webhooks/",
    "/api-keys/",
    "/profile/",
]


def test_main_pages_run_under_the_policy_without_violations(
    page, console, app_server, org_factory, celery_worker_process
):
    violations: list[str] = []
    page.on("console", lambda msg: "Content Security Policy" in msg.text and violations.append(msg.text))
    page.goto(app_server.url())
    page.goto(app_server.url(path="/signup/"))
    slug, email = org_factory("csp")
    login(page, app_server, slug, email)
    for path in MAIN_PAGES:
        response = page.goto(app_server.url(slug, path))
        assert response.status == 200, path
        assert "script-src 'self'" in response.headers["content-security-policy"], path
        page.wait_for_load_state("networkidle")
    page.goto(app_server.url(slug, "/manage/usage/"))
    page.wait_for_function("() => window.Chart && Chart.getChart('chart-tokens') !== undefined")

    # htmx: the agents search swaps the list in place.
    page.goto(app_server.url(slug, "/agents/"))
    page.get_by_role("searchbox").fill("nothing-matches-this")
    expect(page.get_by_text("No agents match")).to_be_visible()

    # The chat's WebSocket to the organisation's own host (connect-src) streams an answer.
    chat_url = _make_agent(page, app_server, slug, "Policy")
    page.goto(chat_url)
    answer = _ask_and_wait(page, "hello")
    assert answer.inner_text().strip()

    # The webhook page: its delivery filter submits on change (was an inline onchange handler).
    page.goto(app_server.url(slug, "/manage/webhooks/"))
    page.get_by_label("URL").fill("https://93.184.216.34/hooks")
    page.get_by_role("checkbox").first.check()
    page.get_by_role("button", name="Add endpoint").click()
    expect(page.get_by_text("Endpoint added.")).to_be_visible()  # on the endpoint's own page
    page.get_by_label("Status").select_option("failed")
    page.wait_for_url(re.compile(r"status=failed"))
    assert not violations, violations
