"""The error vocabulary: every code documented and used, every error class part of it, DRF's own errors in the
one shape (the same body over WebSocket/SSE is shown in agents/tests/test_errors.py)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from django.test import Client

from conftest import host_of
from core.errors import ErrorCode

ROOT = Path(__file__).resolve().parents[2]
APPS = ("accounts", "agents", "backups", "config", "core", "iam", "knowledge", "tenants", "usage", "webhooks")
# Exceptions that never reach a client: control flow inside one module.
# Caught where raised and never shown: a run that lost its claim; a reranker that failed (search keeps fused order).
# A defect of a release, not of a request: a migration added an object the schema clone cannot copy (the clone's
# catalog test fails on it before it ships).
INTERNAL_SIGNALS = {"StaleRun", "RerankerUnavailable", "UnsupportedTemplateObject"}


def _documented_codes() -> set[str]:
    text = (ROOT / "docs" / "errors.md").read_text()
    return set(re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.MULTILINE))


def _product_sources() -> list[Path]:
    return [
        path
        for app in APPS
        for path in (ROOT / app).rglob("*.py")
        if "tests" not in path.parts and "migrations" not in path.parts
    ]


def test_every_error_code_is_documented_and_every_documented_code_is_emitted():
    codes = {str(code) for code in ErrorCode}
    documented = _documented_codes()
    assert codes - documented == set(), "codes missing from docs/errors.md"
    assert documented - codes == set(), "docs/errors.md documents codes that do not exist"
    source = "\n".join(path.read_text() for path in _product_sources())
    unused = {code.value for code in ErrorCode if f"ErrorCode.{code.name}" not in source}
    assert unused == set(), "codes nothing raises: remove them from ErrorCode and docs/errors.md"


def test_every_error_class_of_the_product_is_part_of_the_vocabulary():
    """An exception class either derives (directly or through an app's base) from core.errors.DomainError and
    sets its code from ErrorCode, or is a documented internal signal."""
    bases_of: dict[str, set[str]] = {}
    codes_of: dict[str, str] = {}
    for path in _product_sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases_of[node.name] = {b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in node.bases}
                for stmt in node.body:
                    if isinstance(stmt, ast.Assign) and [getattr(t, "id", "") for t in stmt.targets] == ["code"]:
                        codes_of[node.name] = ast.unparse(stmt.value)

    def is_error(name: str, seen: frozenset = frozenset()) -> bool:
        return name == "DomainError" or any(is_error(b, seen | {name}) for b in bases_of.get(name, set()) - seen)

    raw = {name for name, bases in bases_of.items() if bases & {"Exception", "ValueError", "RuntimeError"}}
    assert raw - {"DomainError"} - INTERNAL_SIGNALS == set(), "error classes outside core.errors.DomainError"
    errors = {name for name in bases_of if is_error(name)}
    assert {"ToolError", "AgentMisconfigured", "ApiKeyRejected", "SearchUnavailable"} <= errors
    assert {name: code for name, code in codes_of.items() if name in errors and not code.startswith("ErrorCode.")} == {}


@pytest.mark.django_db
def test_errors_raised_by_drf_itself_have_the_one_shape_and_a_documented_code(tenant_a, admin_a):
    documented = _documented_codes()
    anonymous = Client(HTTP_HOST=host_of(tenant_a))
    member = Client(HTTP_HOST=host_of(tenant_a))
    member.force_login(admin_a)
    cases = [
        (anonymous.get("/api/v1/agents/"), 401, "not_authenticated"),
        (anonymous.get("/api/v1/agents/", HTTP_AUTHORIZATION="Bearer not-a-jwt"), 401, "token_not_valid"),
        (member.delete("/api/v1/agents/"), 405, "method_not_allowed"),
        (member.post("/api/v1/agents/", "{not json", content_type="application/json"), 400, "parse_error"),
        (member.get("/api/v1/agents/987654/"), 404, "not_found"),
    ]
    for response, status, code in cases:
        body = response.json()
        assert (response.status_code, body["code"]) == (status, code), body
        assert isinstance(body["detail"], str) and body["detail"]
        assert body["code"] in documented
    invalid = member.post("/api/v1/agents/", {"sampling": "hot"}, content_type="application/json")
    assert invalid.status_code == 400
    body = invalid.json()
    assert body["code"] == "invalid" and isinstance(body["detail"], str) and isinstance(body["fields"], dict)


@pytest.mark.django_db
def test_an_invalid_item_of_a_list_leads_the_detail_with_its_index_not_a_python_repr(tenant_a, admin_a):
    member = Client(HTTP_HOST=host_of(tenant_a))
    member.force_login(admin_a)
    response = member.post(
        "/api/v1/api-keys/", {"name": "k", "scopes": ["read", "root"]}, content_type="application/json"
    )
    body = response.json()
    assert response.status_code == 400 and body["code"] == "invalid"
    assert body["detail"] == 'scopes[1]: "root" is not a valid choice.'
    assert body["fields"] == {"scopes": {"1": ['"root" is not a valid choice.']}}
