"""The API docs are served by the product: Swagger UI and ReDoc render every operation with no network beyond
the product's own host (no CDN, no web fonts)."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest
from playwright.sync_api import expect

from .conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db]


def _offline(page) -> list[str]:
    """Abort every request to a host other than this test server's; returns the list of those refused."""
    refused: list[str] = []

    def route(route):
        host = urlparse(route.request.url).hostname or ""
        if host == "localhost" or host.endswith(".localhost") or host == "127.0.0.1":
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    page.route("**/*", route)
    return refused


def test_api_docs_render_every_operation_offline(page, console, app_server, org_factory):
    slug, email = org_factory("docs")
    login(page, app_server, slug, email)
    refused = _offline(page)
    page.goto(app_server.url(slug, "/api/v1/docs/"))
    schema = page.evaluate("async () => (await fetch('/api/v1/schema/?format=json')).json()")
    count = sum(
        method in ("get", "post", "put", "patch", "delete") for item in schema["paths"].values() for method in item
    )
    assert count > 80
    expect(page.locator(".opblock")).to_have_count(count, timeout=30_000)
    expect(page.get_by_text("Ask an agent")).to_be_visible()
    # The init script is a file of the product (a CSP without inline scripts allows it), never inline.
    assert page.locator("script:not([src])").count() == 0

    # ReDoc's "API docs by Redocly" badge is an image on Redocly's host: CSP refuses it, and nothing needs it.
    console.allow(r"cdn\.redoc\.ly/redoc/logo-mini\.svg")
    page.goto(app_server.url(slug, "/api/v1/redoc/"))
    expect(page.get_by_role("heading", name="Search a knowledge base")).to_be_visible(timeout=30_000)

    assert refused == [], f"the docs asked for other hosts: {refused}"
