"""What the fuzzer found (tests/fuzz/api_fuzz.py), each as a regression test: answers that were 5xx, HTML or empty
where the contract declares the JSON error body, or bodies that did not match their declared schema."""

from __future__ import annotations

import uuid

import pytest

from tests.test_api_contract import conforms, schema  # noqa: F401 - fixtures: the generated contract, its checker

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(client_a, admin_a):
    client_a.force_login(admin_a)
    return client_a


@pytest.mark.parametrize(
    "path",
    ["/api/v1/knowledge-bases/-1/", "/api/v1/agents/not-a-number/versions/", "/api/v1/no-such-resource/"],
)
def test_an_api_path_no_route_matches_is_the_json_404_of_the_contract(api, path):
    response = api.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "not_found"


def test_a_page_no_route_matches_is_still_the_html_404_page(api):
    response = api.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_messages_of_a_conversation_id_that_is_not_a_uuid_are_not_found(api):
    assert api.get("/api/v1/conversations/0/messages/").status_code == 404
    assert api.get(f"/api/v1/conversations/{uuid.uuid4()}/messages/").status_code == 404


def test_conversations_filtered_by_an_agent_that_is_not_an_integer_is_invalid_input(api):
    response = api.get("/api/v1/conversations/?agent=true")
    assert response.status_code == 400
    assert "agent" in response.json()["fields"]
    assert api.get("/api/v1/conversations/?agent=999999").status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("get", f"/api/v1/runs/{uuid.uuid4()}/events/?format=sse", {}),
        ("get", f"/api/v1/runs/{uuid.uuid4()}/events/", {"HTTP_ACCEPT": "text/event-stream"}),
        ("post", "/api/v1/agents/999999/chat/", {"HTTP_ACCEPT": "text/event-stream"}),
        ("post", "/api/v1/agents/999999/chat/?format=sse", {}),
    ],
)
def test_an_error_where_a_stream_was_asked_for_is_json_and_says_so(api, method, path, headers):
    response = getattr(api, method)(path, **headers)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "not_found"


def test_errors_of_list_items_conform_to_the_error_schema(api, conforms):  # noqa: F811
    refused = api.post(
        "/api/v1/webhooks/endpoints/",
        {"url": "https://hooks.example.com/in", "event_types": ["", "x" * 81]},
        content_type="application/json",
    )
    assert refused.status_code == 400
    assert set(refused.json()["fields"]["event_types"]) == {"0", "1"}  # per item, each with its messages
    conforms(refused, "post", "/api/v1/webhooks/endpoints/")


def test_unset_dates_of_keys_and_invitations_conform_to_their_schemas(api, conforms):  # noqa: F811
    created = api.post("/api/v1/api-keys/", {"name": "ci", "scopes": ["read"]}, content_type="application/json")
    assert created.status_code == 201 and created.json()["revoked_at"] is None
    conforms(created, "post", "/api/v1/api-keys/")
    conforms(api.get("/api/v1/api-keys/"), "get", "/api/v1/api-keys/")
    invited = api.post("/api/v1/invitations/", {"email": "new@acme.test"}, content_type="application/json")
    assert invited.status_code == 201 and invited.json()["accepted_at"] is None
    conforms(invited, "post", "/api/v1/invitations/")


def test_a_data_policy_that_is_not_a_json_object_is_invalid_input(api):
    response = api.patch("/api/v1/organisation/data-policy/", [None, None], content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
