"""Bad input on the agents API is a 4xx in the one error shape, never a 5xx (and never a stream that fails)."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from conftest import host_of

pytestmark = pytest.mark.django_db
DEEP = "[" * 50_000 + "]" * 50_000


@pytest.fixture
def client(tenant_a, admin_a) -> Client:
    client = Client(HTTP_HOST=host_of(tenant_a), raise_request_exception=False)
    client.force_login(admin_a)
    return client


@pytest.fixture
def agent_id(client) -> int:
    return client.post("/api/v1/agents/", {"name": "Probe"}, content_type="application/json").json()["id"]


@pytest.fixture
def events_url(client, agent_id) -> str:
    run = client.post(
        f"/api/v1/agents/{agent_id}/chat/", {"message": "hi", "wait": False}, content_type="application/json"
    )
    assert run.status_code == 202, run.content
    return f"/api/v1/runs/{run.json()['run_id']}/events/"


def test_json_nested_50000_deep_is_refused_at_the_parser(client, agent_id):
    for url in ("/api/v1/agents/", f"/api/v1/agents/{agent_id}/chat/"):
        response = client.post(url, DEEP, content_type="application/json")
        assert response.status_code == 400, (url, response.content[:200])
        assert response.json()["code"] == "nesting_too_deep"


def test_a_json_body_over_the_size_limit_is_refused(client, settings):
    settings.API_JSON_MAX_BYTES = 1000
    response = client.post("/api/v1/agents/", {"name": "x", "description": "y" * 2000}, content_type="application/json")
    assert response.status_code == 413
    assert response.json() == {
        "code": "payload_too_large",
        "detail": "The request body is larger than the limit of 1000 bytes.",
        "limit": 1000,
    }
    small = client.post("/api/v1/agents/", {"name": "x", "description": "y" * 100}, content_type="application/json")
    assert small.status_code == 201


def test_a_nul_character_in_a_json_body_is_refused_before_it_reaches_the_database(client):
    response = client.post("/api/v1/agents/", '{"name": "a\\u0000b"}', content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "invalid"


@pytest.mark.parametrize(
    ("query", "headers", "field"),
    [
        ("?after=" + "9" * 40, {}, "after"),  # Redis: "Invalid stream ID"
        ("?after=-1&wait=0", {}, "after"),
        ("?after=abc", {}, "after"),
        ("?after=0&wait=nan", {}, "wait"),  # hung, then ValueError after the headers were sent
        ("?after=0&wait=-1", {}, "wait"),
        ("?after=0&wait=abc", {}, "wait"),
        ("", {"HTTP_ACCEPT": "text/event-stream", "HTTP_LAST_EVENT_ID": "9" * 40}, "after"),
        ("", {"HTTP_ACCEPT": "text/event-stream", "HTTP_LAST_EVENT_ID": "-5"}, "after"),
        ("", {"HTTP_ACCEPT": "text/event-stream", "HTTP_LAST_EVENT_ID": "abc"}, "after"),
    ],
)
def test_run_event_parameters_are_validated_before_anything_streams(client, events_url, query, headers, field):
    response = client.get(events_url + query, **headers)
    assert not response.streaming
    assert response.status_code == 400, response.content
    body = json.loads(response.content)
    assert body["code"] == "invalid" and field in body["fields"]


def test_valid_run_event_parameters_still_answer(client, events_url):
    polled = client.get(events_url + "?after=0&wait=0")
    assert polled.status_code == 200 and polled.json()["events"] == []
    assert client.get(events_url + "?after=0&wait=1e400").status_code == 400  # infinity is no number of seconds
