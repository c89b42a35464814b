"""Outgoing webhooks against a real receiver on 127.0.0.1: signatures, retries, replay, SSRF, auto-disable."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django_tenants.utils import tenant_context

from core.ssrf import UnsafeURL
from webhooks import delivery as deliveries
from webhooks import services
from webhooks.models import WebhookDelivery
from webhooks.signing import verify


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers from a script of status codes (the last repeats)."""

    def __init__(self, statuses=(200,), hang: float = 0.0):
        self.statuses = list(statuses)
        self.hang = hang
        self.requests: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                owner.requests.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                if owner.hang:
                    time.sleep(owner.hang)
                status = owner.statuses[min(len(owner.requests) - 1, len(owner.statuses) - 1)]
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/agentry"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def allow_loopback(settings):
    # The SSRF guard refuses loopback by default; the operator allows the test receiver explicitly.
    settings.SSRF_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    settings.WEBHOOK_BACKOFF_BASE_SECONDS = 0.01
    settings.WEBHOOK_TIMEOUT_SECONDS = 2


@pytest.fixture
def receiver():
    made = []

    def make(*statuses, hang=0.0):
        made.append(Receiver(statuses or (200,), hang=hang))
        return made[-1]

    yield make
    for r in made:
        r.close()


def _event(kind="agent.created", **data):
    return {"id": f"evt{time.monotonic_ns()}", "type": kind, "topic": None, "ts": time.time(), "data": data}


@pytest.mark.django_db
def test_ssrf_targets_are_refused_when_registering(client_a, admin_a):
    client_a.force_login(admin_a)
    for url in (
        "http://127.0.0.1:8080/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/",
        "http://localhost/",
        "file:///etc/passwd",
        "http://[::1]/",
        "http://[2002:7f00:1::1]/",  # 6to4 of 127.0.0.1
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of the metadata address
    ):
        response = client_a.post(
            "/api/v1/webhooks/endpoints/",
            {"url": url, "event_types": ["agent.created"]},
            content_type="application/json",
        )
        assert response.status_code == 400, url
        assert response.json()["code"] in ("unsafe_url", "invalid") and response.json()["field"] == "url", url


@pytest.mark.django_db
def test_delivery_is_signed_and_the_signature_verifies(tenant_a, principal_a, allow_loopback, receiver):
    target = receiver(200)
    with tenant_context(tenant_a):
        endpoint = services.endpoint_create(principal=principal_a, url=target.url, event_types=["agent.created"])
        (delivery_id,) = deliveries.deliveries_create_for_event(_event(agent_id=5, name="Helper"))
        deliveries.deliveries_create_for_event(_event("document.status"))  # not subscribed: no delivery
        assert deliveries.delivery_attempt(delivery_id).status == "delivered"
        delivery = WebhookDelivery.objects.get(pk=delivery_id)
        assert delivery.response_code == 200 and delivery.attempts == 1 and delivery.delivered_at
    (request,) = target.requests
    header = request["headers"]["agentry-signature"]
    assert verify(endpoint.secret, request["body"], header)
    # what a receiver written from docs/webhooks.md does, by hand:
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(endpoint.secret.encode(), f"{parts['t']}.".encode() + request["body"], hashlib.sha256)
    assert hmac.compare_digest(expected.hexdigest(), parts["v1"])
    assert not verify("whsec_wrong", request["body"], header)
    assert not verify(endpoint.secret, request["body"] + b" ", header)  # tampered body
    assert not verify(endpoint.secret, request["body"], header, now=int(parts["t"]) + 3600)  # stale replay
    body = json.loads(request["body"])
    assert body["type"] == "agent.created" and body["data"] == {"agent_id": 5, "name": "Helper"}
    assert request["headers"]["agentry-event"] == "agent.created"


@pytest.mark.django_db
def test_failures_are_retried_with_backoff_until_delivered(tenant_a, principal_a, allow_loopback, receiver):
    target = receiver(500, 503, 200)
    with tenant_context(tenant_a):
        services.endpoint_create(principal=principal_a, url=target.url, event_types=["*"])
        (delivery_id,) = deliveries.deliveries_create_for_event(_event())
        first = deliveries.delivery_attempt(delivery_id)
        assert first.status == "retrying" and first.retry_in > 0
        second = deliveries.delivery_attempt(delivery_id)
        assert second.status == "retrying" and second.retry_in > first.retry_in * 1.2  # exponential (jittered)
        assert deliveries.delivery_attempt(delivery_id).status == "delivered"
        delivery = WebhookDelivery.objects.get(pk=delivery_id)
        assert delivery.attempts == 3 and delivery.response_code == 200
        assert delivery.endpoint.consecutive_failures == 0
    assert len(target.requests) == 3
    assert len({r["headers"]["agentry-event-id"] for r in target.requests}) == 1  # same event every time


@pytest.mark.django_db
def test_a_hanging_receiver_times_out_and_is_retried_then_visibly_fails(
    tenant_a, principal_a, allow_loopback, receiver, settings
):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    target = receiver(200, hang=1.0)
    with tenant_context(tenant_a):
        services.endpoint_create(principal=principal_a, url=target.url, event_types=["*"])
        (delivery_id,) = deliveries.deliveries_create_for_event(_event())
        assert deliveries.delivery_attempt(delivery_id).status == "retrying"
        assert deliveries.delivery_attempt(delivery_id).status == "failed"
        delivery = WebhookDelivery.objects.get(pk=delivery_id)
        assert "Timed out" in delivery.error and delivery.response_code is None


@pytest.mark.django_db
def test_replay_sends_the_same_event_again(client_a, admin_a, tenant_a, principal_a, allow_loopback, receiver):
    target = receiver(500, 200)
    with tenant_context(tenant_a):
        services.endpoint_create(principal=principal_a, url=target.url, event_types=["*"])
        (delivery_id,) = deliveries.deliveries_create_for_event(_event())
        WebhookDelivery.objects.filter(pk=delivery_id).update(status="failed")
    client_a.force_login(admin_a)
    response = client_a.post(f"/api/v1/webhooks/deliveries/{delivery_id}/replay/")
    assert response.status_code == 202, response.content
    replay_id = response.json()["id"]
    assert response.json()["replay_of_id"] == delivery_id
    with tenant_context(tenant_a):
        deliveries.delivery_attempt(replay_id)  # the receiver's scripted 500
        assert deliveries.delivery_attempt(replay_id).status == "delivered"
    with tenant_context(tenant_a):
        endpoint_id = WebhookDelivery.objects.get(pk=replay_id).endpoint_id
    listing = client_a.get(f"/api/v1/webhooks/endpoints/{endpoint_id}/deliveries/").json()
    assert {d["id"]: d["status"] for d in listing} == {delivery_id: "failed", replay_id: "delivered"}
    assert len({r["headers"]["agentry-event-id"] for r in target.requests}) == 1


@pytest.mark.django_db
def test_sustained_failure_disables_the_endpoint_and_tells_the_admins(
    tenant_a, principal_a, admin_a, allow_loopback, receiver, settings, django_capture_on_commit_callbacks
):
    from core.events import stream_read

    settings.WEBHOOK_DISABLE_AFTER_FAILURES = 3
    settings.WEBHOOK_DISABLE_AFTER_SECONDS = 0
    target = receiver(500)
    with tenant_context(tenant_a):
        endpoint = services.endpoint_create(principal=principal_a, url=target.url, event_types=["*"])
        (delivery_id,) = deliveries.deliveries_create_for_event(_event())
        with django_capture_on_commit_callbacks(execute=True):
            for _ in range(3):
                deliveries.delivery_attempt(delivery_id)
        endpoint.refresh_from_db()
        assert endpoint.is_active is False and "3 failed attempts" in endpoint.disabled_reason
        # Still-pending work is visibly failed, never silently dropped.
        assert deliveries.delivery_attempt(delivery_id).status == "failed"
    assert any(admin_a.email in m.to and "Webhook disabled" in m.subject for m in mail.outbox)
    events = [e for _, e in stream_read(tenant_a.schema_name) if e["type"] == "webhook.disabled"]
    assert events and events[-1]["data"]["endpoint_id"] == endpoint.pk


@pytest.mark.django_db
def test_published_events_reach_the_receiver_through_celery_tasks(
    tenant_a, principal_a, allow_loopback, receiver, django_capture_on_commit_callbacks, settings
):
    """publish -> webhooks.fanout -> webhooks.deliver (tasks run eagerly here; the worker runs them in prod)."""
    from core.events import publish

    target = receiver(200)
    with tenant_context(tenant_a):
        services.endpoint_create(principal=principal_a, url=target.url, event_types=["knowledge_base.version"])
        from webhooks.dispatch import subscribed_types_refresh

        subscribed_types_refresh(tenant_a.schema_name)
        # Celery's configuration reads Django's settings, where an override made here wins (restored after the test).
        settings.CELERY_TASK_ALWAYS_EAGER = True
        with django_capture_on_commit_callbacks(execute=True):
            publish("knowledge_base.version", {"knowledge_base_id": 1, "name": "Handbook", "current_version": 2})
            publish("agent.created", {"agent_id": 9, "name": "Helper"})  # not subscribed
    assert len(target.requests) == 1
    assert json.loads(target.requests[0]["body"])["data"] == {
        "knowledge_base_id": 1,
        "name": "Handbook",
        "current_version": 2,
    }


@pytest.mark.django_db
def test_the_ssrf_guard_refuses_at_delivery_time_too(tenant_a, principal_a, allow_loopback, receiver, settings):
    target = receiver(200)
    with tenant_context(tenant_a):
        services.endpoint_create(principal=principal_a, url=target.url, event_types=["*"])
        (delivery_id,) = deliveries.deliveries_create_for_event(_event())
        settings.SSRF_ALLOWED_NETWORKS = []  # the operator withdrew the exception (or DNS now points inside)
        assert deliveries.delivery_attempt(delivery_id).status == "failed"
        assert "SSRF" in WebhookDelivery.objects.get(pk=delivery_id).error
    assert target.requests == []
    with pytest.raises(UnsafeURL):
        services._validate_url("http://169.254.169.254/")


@pytest.mark.django_db
def test_other_tenants_and_non_admins_get_nothing(
    client_a, client_b, admin_a, admin_b, tenant_a, principal_a, allow_loopback, receiver
):
    from accounts.models import Membership, User

    target = receiver(200)
    with tenant_context(tenant_a):
        endpoint = services.endpoint_create(principal=principal_a, url=target.url, event_types=["*"])
        (delivery_id,) = deliveries.deliveries_create_for_event(_event())
    client_b.force_login(admin_b)
    assert client_b.get("/api/v1/webhooks/endpoints/").json() == []
    assert client_b.get(f"/api/v1/webhooks/endpoints/{endpoint.pk}/").status_code == 404
    assert client_b.post(f"/api/v1/webhooks/deliveries/{delivery_id}/replay/").status_code == 404
    # admin of globex on acme's host: not a member there
    client_b_on_a = client_a.__class__(HTTP_HOST=client_a.defaults["HTTP_HOST"])
    client_b_on_a.force_login(admin_b)
    assert client_b_on_a.get("/api/v1/webhooks/endpoints/").status_code in (401, 403)
    member = User.objects.create_user(email="plain@acme.test", password="x" * 12)
    Membership.objects.create(user=member, tenant=tenant_a, role="user")
    client_a.force_login(member)
    response = client_a.get("/api/v1/webhooks/endpoints/")
    assert response.status_code == 403
    assert endpoint.secret not in response.content.decode()
