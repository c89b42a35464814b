"""The API contract (/api/v1/schema/) is complete, valid and true.

Complete: every operation declares its request and response bodies and its errors with the one Error schema.
Valid: openapi-spec-validator accepts it and drf-spectacular generates it without a warning (also in `make lint`).
True: real responses of the server validate against the schemas their operations declare.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import yaml
from django.core.management import call_command
from openapi_spec_validator import validate as validate_openapi

from knowledge.retrieval import DEFAULT_TOP_K

WRITE_METHODS = ("post", "put", "patch")
# Actions whose request carries nothing: the path says it all.
BODYLESS_ACTIONS = {
    ("post", "/api/v1/knowledge-bases/{kb_id}/versions/{number}/rollback/"),
    ("post", "/api/v1/knowledge-bases/{kb_id}/tuning/"),
    ("post", "/api/v1/me/tokens/revoke/"),
    ("post", "/api/v1/organisation/exports/"),
    ("post", "/api/v1/runs/{run_id}/cancel/"),
    ("post", "/api/v1/webhooks/deliveries/{delivery_id}/replay/"),
    ("post", "/api/v1/webhooks/endpoints/{endpoint_id}/test/"),
}
# Payloads whose listed keys are guaranteed and that may carry more (error context, provider extras).
OPEN_COMPONENTS = {"Error", "RunError", "IngestError", "Citation", "SearchHit"}


@pytest.fixture(scope="module")
def schema(tmp_path_factory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("schema") / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))  # raises on any warning
    return yaml.safe_load(path.read_text())


def _operations(schema: dict[str, Any]):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                yield method, path, operation


def _ref_name(content: dict[str, Any]) -> str:
    return content["schema"].get("$ref", "").rsplit("/", 1)[-1]


def test_schema_is_valid_openapi(schema):
    validate_openapi(schema)
    assert len(list(_operations(schema))) > 80


def test_every_operation_declares_its_bodies_and_errors_with_the_error_schema(schema):
    components = schema["components"]["schemas"]
    for method, path, operation in _operations(schema):
        where = f"{method.upper()} {path}"
        responses = operation["responses"]
        successes = {status: r for status, r in responses.items() if status.startswith("2")}
        assert successes, where
        for status, response in successes.items():
            assert status == "204" or response.get("content"), f"{where} {status}: no response body"
        errors = {status: r for status, r in responses.items() if status[0] in "45"}
        assert errors, f"{where}: no error responses"
        for status, response in errors.items():
            error_schema = components[_ref_name(response["content"]["application/json"])]
            assert {"code", "detail"} <= set(error_schema["properties"]), f"{where} {status}"
            assert error_schema["required"][:2] == ["code", "detail"], f"{where} {status}"
        if method in WRITE_METHODS and (method, path) not in BODYLESS_ACTIONS:
            assert operation.get("requestBody", {}).get("content"), f"{where}: no request body"
        if "{" in path:
            assert "404" in responses, where


def test_chat_is_documented_as_json_sse_async_and_websocket(schema):
    chat = schema["paths"]["/api/v1/agents/{agent_id}/chat/"]["post"]
    request = chat["requestBody"]["content"]["application/json"]
    assert "message" in schema["components"]["schemas"][_ref_name(request)]["required"]
    ok = chat["responses"]["200"]["content"]
    assert _ref_name(ok["application/json"]) == "ChatAnswer"
    assert ok["text/event-stream"]["schema"]["type"] == "string"
    assert _ref_name(chat["responses"]["202"]["content"]["application/json"]) == "ChatAccepted"
    assert "/ws/agents/{agent_id}/chat/" in chat["description"]
    events = schema["paths"]["/api/v1/runs/{run_id}/events/"]["get"]
    parameters = {(p["in"], p["name"]) for p in events["parameters"]}
    assert {("query", "after"), ("query", "wait"), ("header", "Last-Event-ID")} <= parameters
    assert set(events["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}


def test_uploads_are_multipart_or_json(schema):
    upload = schema["paths"]["/api/v1/knowledge-bases/{kb_id}/documents/"]["post"]["requestBody"]["content"]
    files = schema["components"]["schemas"][_ref_name(upload["multipart/form-data"])]["properties"]["files"]
    assert files["items"]["format"] == "binary"
    assert "application/json" in upload


def test_search_default_top_k_is_the_dashboards(schema, client_a, admin_a):
    search = schema["paths"]["/api/v1/knowledge-bases/{kb_id}/search/"]["post"]
    request = schema["components"]["schemas"][_ref_name(search["requestBody"]["content"]["application/json"])]
    assert request["required"] == ["query"]
    assert request["properties"]["top_k"]["default"] == DEFAULT_TOP_K
    client_a.force_login(admin_a)
    kb = client_a.post("/api/v1/knowledge-bases/", {"name": "Defaults"}, content_type="application/json").json()
    page = client_a.get(f"/knowledge/{kb['id']}/search/")
    assert page.status_code == 200
    assert f'name="k" min="1" max="100" value="{DEFAULT_TOP_K}"' in page.content.decode()


# --- Real responses against the schema -----------------------------------------------------------------


def _json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema: `nullable` becomes a null alternative, and closed objects refuse
    keys they do not list (a response key missing from the contract fails)."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _json_schema(value) for key, value in node.items() if key != "nullable"}
    if converted.get("type") == "object" and "properties" in converted:
        converted.setdefault("additionalProperties", False)
    if node.get("nullable"):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


@pytest.fixture(scope="module")
def conforms(schema):
    components = {
        name: {**component, "additionalProperties": True} if name in OPEN_COMPONENTS else component
        for name, component in schema["components"]["schemas"].items()
    }
    definitions = _json_schema({"components": {"schemas": components}})

    def check(response, method: str, path: str) -> None:
        operation = schema["paths"][path][method]
        declared = operation["responses"][str(response.status_code)]["content"]["application/json"]["schema"]
        jsonschema.validate(response.json(), {**definitions, **declared})

    return check


def test_knowledge_responses_conform_to_the_contract(client_a, admin_a, conforms):
    client_a.force_login(admin_a)
    kbs = "/api/v1/knowledge-bases/"
    created = client_a.post(kbs, {"name": "Contract"}, content_type="application/json")
    conforms(created, "post", kbs)
    kb = f"{kbs}{{kb_id}}/"
    kb_url = f"{kbs}{created.json()['id']}/"
    conforms(client_a.get(kbs), "get", kbs)
    conforms(client_a.get(kb_url), "get", kb)
    added = client_a.post(
        f"{kb_url}documents/",
        {"title": "Keys", "text": "Rotate API keys every 90 days."},
        content_type="application/json",
    )
    assert added.status_code == 202
    conforms(added, "post", f"{kb}documents/")
    refused = client_a.post(f"{kb_url}documents/", {"url": "http://127.0.0.1/"}, content_type="application/json")
    assert refused.status_code == 400
    conforms(refused, "post", f"{kb}documents/")
    conforms(client_a.get(f"{kb_url}documents/"), "get", f"{kb}documents/")
    conforms(client_a.get(f"{kb_url}versions/"), "get", f"{kb}versions/")
    conforms(client_a.get(f"{kb_url}tuning/"), "get", f"{kb}tuning/")
    conforms(client_a.delete(f"{kb_url}tuning/"), "delete", f"{kb}tuning/")
    conforms(client_a.post(f"{kb_url}tuning/"), "post", f"{kb}tuning/")
    invalid = client_a.post(f"{kb_url}search/", {"top_k": 0}, content_type="application/json")
    assert invalid.status_code == 400
    conforms(invalid, "post", f"{kb}search/")
    missing = client_a.get(f"{kbs}999999/")
    assert missing.status_code == 404
    conforms(missing, "get", kb)


def test_agent_responses_conform_to_the_contract(client_a, admin_a, conforms):
    client_a.force_login(admin_a)
    agents = "/api/v1/agents/"
    created = client_a.post(agents, {"name": "Contract"}, content_type="application/json")
    conforms(created, "post", agents)
    agent_url = f"{agents}{created.json()['id']}/"
    conforms(client_a.get(agents), "get", agents)
    conforms(client_a.get(agent_url), "get", f"{agents}{{agent_id}}/")
    conforms(client_a.get(f"{agent_url}versions/"), "get", f"{agents}{{agent_id}}/versions/")
    conforms(client_a.get("/api/v1/agent-tools/"), "get", "/api/v1/agent-tools/")
    conforms(client_a.get("/api/v1/conversations/"), "get", "/api/v1/conversations/")
    conforms(client_a.get("/api/v1/llm-providers/"), "get", "/api/v1/llm-providers/")
    empty = client_a.post(f"{agent_url}chat/", {}, content_type="application/json")
    assert empty.status_code == 400 and "message" in empty.json()["fields"]
    conforms(empty, "post", f"{agents}{{agent_id}}/chat/")
    conforms(client_a.get("/api/v1/usage/quotas/"), "get", "/api/v1/usage/quotas/")
    conforms(client_a.get("/api/v1/usage/summary/"), "get", "/api/v1/usage/summary/")
