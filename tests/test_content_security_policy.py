"""Content-Security-Policy: every page carries a strict policy, and no template holds what that policy would block
(inline scripts, event-handler attributes, htmx's hx-on, javascript: URLs, inline styles). The browser tests
(tests/browser) load the pages under the real header and fail on any violation the browser reports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings

from conftest import ROOT

TEMPLATE_DIRS = [Path(d) for d in settings.TEMPLATES[0]["DIRS"]] + [
    path for path in ROOT.glob("*/templates") if path.is_dir() and path.parent.name not in ("node_modules", ".venv")
]
# Script elements that only carry data are not executed; every other <script> must load a file (src=).
DATA_SCRIPT_TYPES = {"application/json", "application/ld+json"}
TAG = re.compile(r"<([a-zA-Z][\w-]*)((?:[^>\"']|\"[^\"]*\"|'[^']*')*)>", re.DOTALL)
ATTRIBUTE = re.compile(r"""([^\s=/>]+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s>]+))?""")
FORBIDDEN_ATTRIBUTE = [
    (re.compile(r"^on[a-z]+$", re.I), "an inline event handler"),
    (re.compile(r"^(data-)?hx-on", re.I), "htmx's hx-on (inline script)"),
    (re.compile(r"^style$", re.I), "an inline style attribute"),
]


COMMENTS = re.compile(r"{#.*?#}|{% *comment *%}.*?{% *endcomment *%}|<!--.*?-->", re.DOTALL)


def inline_code(source: str) -> list[str]:
    """What in one template a CSP without 'unsafe-inline' or 'unsafe-eval' would block, as readable findings."""
    found = []
    source = COMMENTS.sub("", source)
    for match in TAG.finditer(source):
        name, raw = match.group(1).lower(), match.group(2)
        attributes = {key.lower(): (value or "").strip("\"'") for key, value in ATTRIBUTE.findall(raw)}
        for key, value in attributes.items():
            for pattern, what in FORBIDDEN_ATTRIBUTE:
                if pattern.match(key):
                    found.append(f"{what}: {key}=")
            if value.strip().lower().startswith("javascript:"):
                found.append(f"a javascript: URL in {key}=")
            if key in ("hx-vals", "hx-vars", "data-hx-vals") and value.strip().startswith("js:"):
                found.append(f"htmx evaluating script in {key}=")
        if name == "script" and "src" not in attributes and attributes.get("type", "") not in DATA_SCRIPT_TYPES:
            found.append("an inline <script> (load a file from static/js instead)")
        if name == "style":
            found.append("an inline <style> element (put the rules in static/css)")
    return found


def test_the_scanner_finds_each_kind_of_inline_code():
    sample = """<script>alert(1)</script><script src="/static/js/app.js" defer></script>
    <script type="application/json" id="data">{"a": 1}</script><button onclick="go()">x</button>
    <select onChange='this.form.submit()'></select><div hx-on:click="x()"></div><div hx-on-htmx-load="y()"></div>
    <a href="javascript:void(0)">x</a><p style="color:red"></p><style>p{}</style><div hx-vals='js:{a: 1}'></div>
    {# an inline <script> named in a comment #}<!-- <b onclick="x()"> -->"""
    assert inline_code(sample) == [
        "an inline <script> (load a file from static/js instead)",
        "an inline event handler: onclick=",
        "an inline event handler: onchange=",
        "htmx's hx-on (inline script): hx-on:click=",
        "htmx's hx-on (inline script): hx-on-htmx-load=",
        "a javascript: URL in href=",
        "an inline style attribute: style=",
        "an inline <style> element (put the rules in static/css)",
        "htmx evaluating script in hx-vals=",
    ]


def test_no_template_holds_inline_scripts_handlers_or_styles():
    templates = sorted(path for folder in TEMPLATE_DIRS for path in folder.rglob("*.html"))
    assert len(templates) > 30, TEMPLATE_DIRS  # the scan really reads the project's templates
    findings = [
        f"{path.relative_to(ROOT)}: {finding}" for path in templates for finding in inline_code(path.read_text())
    ]
    assert not findings, "Content-Security-Policy would block:\n" + "\n".join(findings)


def _policy(response) -> dict[str, list[str]]:
    header = response.headers["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in header.split(";") if part.strip()}


@pytest.mark.django_db
def test_pages_carry_a_strict_policy_that_allows_websockets_to_their_own_host(client_a, admin_a, public_client):
    client_a.force_login(admin_a)
    host = client_a.defaults["HTTP_HOST"]
    for response in (client_a.get("/"), client_a.get("/agents/"), client_a.get("/manage/webhooks/")):
        assert response.status_code == 200
        policy = _policy(response)
        assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
        assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"]
        assert policy["base-uri"] == ["'self'"] and policy["default-src"] == ["'self'"]
        assert policy["connect-src"] == ["'self'", f"ws://{host}"]
        assert not any("unsafe" in source for sources in policy.values() for source in sources)
    secure = client_a.get("/agents/", secure=True)
    assert _policy(secure)["connect-src"] == ["'self'", f"wss://{host}"]  # behind TLS: wss only
    landing = public_client.get("/")
    assert landing.status_code == 200 and _policy(landing)["script-src"] == ["'self'"]
    assert "Content-Security-Policy" in client_a.get("/api/v1/me/").headers  # API answers too
