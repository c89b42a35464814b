"""Secrets never reach the logs. One end-to-end run through a real daphne (logging at DEBUG) and the product's
Celery workers uses every kind of secret the product handles: a password, a JWT pair, an API key, an LLM
provider key (sent to a loopback fake provider), a webhook signing secret (signing deliveries to a loopback
receiver). Then every log line the web and worker processes wrote during the run is searched for each of them."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets
from django.db import connection

from agents.tests.conftest import stop_process
from agents.tests.fakes import FakeOpenAI
from config.processes import WEB, WORKERS, command
from conftest import ROOT, subprocess_env
from iam.keys import KEY_PREFIX
from tests.browser.conftest import _mark_email_verified, committed, free_port, unique_slug
from webhooks.tests.test_webhooks import Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]


@pytest.fixture
def web_process(django_db_blocker, tmp_path):
    """A daphne of its own, logging everything (DEBUG, JSON) to a file the test reads."""
    port = free_port()
    with django_db_blocker.unblock():
        env = subprocess_env()
    env.update(LOG_LEVEL="DEBUG", LOG_FORMAT="json", SSRF_ALLOWED_NETWORKS="127.0.0.0/8")
    log_path = tmp_path / "web.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", *command(WEB, port=str(port))], cwd=ROOT, env=env, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"Host": "localhost"}, timeout=2).is_success:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "daphne did not answer /healthz within 60 s"
            time.sleep(0.25)
        yield port, log_path
    finally:
        stop_process(proc)


async def open_event_feed(port: int, slug: str, query: str) -> None:
    async with websockets.connect(
        f"ws://{slug}.localhost:{port}/ws/events/?{query}", host="127.0.0.1", port=port, open_timeout=10
    ) as socket:
        await socket.send(json.dumps({"type": "ping"}))
        await asyncio.wait_for(socket.recv(), timeout=10)  # accepted: the credentials were read


def worker_logs() -> list[Path]:
    return [ROOT / "var" / f"celery-{kind}-{connection.settings_dict['NAME']}.log" for kind in WORKERS]


def test_no_secret_used_in_a_full_run_appears_in_any_log(web_process, celery_worker_process):
    port, web_log = web_process
    worker_offsets = {path: path.stat().st_size for path in worker_logs()}
    slug, email, password = unique_slug("logs"), f"owner@{unique_slug('logs')}.test", "pw-" + secrets.token_urlsafe(18)

    def create_organisation():
        from tenants.services import tenant_create

        tenant_create(name="Log scan", slug=slug, owner_email=email, owner_password=password)
        connection.set_schema_to_public()
        _mark_email_verified(email)

    committed(create_organisation)
    provider_key = "sk-live-" + secrets.token_urlsafe(24)
    receiver = Receiver()
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Host": f"{slug}.localhost:{port}"}, timeout=30)
    try:
        with FakeOpenAI([{"text": ["All", " quiet", "."]}]) as fake:
            bad_login = http.post("/api/v1/auth/token/", json={"email": email, "password": password + "x"})
            assert bad_login.status_code == 401  # a refused attempt is logged: its password must not be
            tokens = http.post("/api/v1/auth/token/", json={"email": email, "password": password}).json()
            jwt = {"Authorization": f"Bearer {tokens['access']}"}
            refreshed = http.post("/api/v1/auth/token/refresh/", json={"refresh": tokens["refresh"]}).json()
            created = http.post("/api/v1/api-keys/", json={"name": "ops", "scopes": ["admin", "chat"]}, headers=jwt)
            assert created.status_code == 201, created.text
            api_key = created.json()["key"]
            by_key = {"Authorization": f"Api-Key {api_key}"}
            assert http.get("/api/v1/me/", headers={"Authorization": f"Api-Key {api_key}x"}).status_code == 401
            hook = http.post(
                "/api/v1/webhooks/endpoints/", json={"url": receiver.url, "event_types": ["*"]}, headers=by_key
            )
            assert hook.status_code == 201, hook.text
            signing_secret = hook.json()["secret"]
            provider = http.post(
                "/api/v1/llm-providers/",
                json={
                    "name": "fake",
                    "kind": "openai",
                    "base_url": fake.url + "/v1",
                    "api_key": provider_key,
                    "default_model": "gpt-fake",
                },
                headers=by_key,
            )
            assert provider.status_code == 201, provider.text
            agent = http.post(
                "/api/v1/agents/", json={"name": "Quiet", "provider_id": provider.json()["id"]}, headers=jwt
            )
            assert agent.status_code == 201, agent.text
            with http.stream(
                "POST",
                f"/api/v1/agents/{agent.json()['id']}/chat/",
                json={"message": "Anything to report?"},
                headers={**by_key, "Accept": "text/event-stream"},
            ) as stream:
                assert stream.status_code == 200, stream.read()
                events = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: ")]
            assert events[-1]["type"] == "message.end" and events[-1]["data"]["status"] == "complete", events[-3:]
            assert fake.requests[0]["headers"]["authorization"] == f"Bearer {provider_key}"  # the key was used
            deadline = time.monotonic() + 30
            while not receiver.requests and time.monotonic() < deadline:
                time.sleep(0.2)
            assert receiver.requests, "no webhook delivery within 30 s"
            delivered = receiver.requests[0]
            timestamp, signature = (
                part.split("=", 1)[1] for part in delivered["headers"]["agentry-signature"].split(",")
            )
            expected = hmac.new(signing_secret.encode(), f"{timestamp}.".encode() + delivered["body"], hashlib.sha256)
            assert signature == expected.hexdigest()  # the signing secret was used
            # Browsers cannot set headers on a WebSocket: the credentials ride in the query string, which a web
            # server's access log would print with the path.
            for query in (f"token={tokens['access']}", f"api_key={api_key}"):
                asyncio.run(open_event_feed(port, slug, query))
            assert http.post("/api/v1/auth/logout/", json={"refresh": refreshed["refresh"]}, headers=jwt).is_success
    finally:
        http.close()
        receiver.close()
    time.sleep(1)  # the workers' last lines reach their files

    logs = {"web": web_log.read_text()}
    for path, offset in worker_offsets.items():
        with open(path) as file:
            file.seek(offset)
            logs[path.stem] = file.read()
    used = {
        "password": password,
        "JWT access token": tokens["access"],
        "JWT refresh token": tokens["refresh"],
        "rotated refresh token": refreshed["refresh"],
        "API key": api_key,
        "API key secret part": api_key[len(KEY_PREFIX) + 13 :],  # after "<prefix><12 hex>_"
        "provider key": provider_key,
        "webhook signing secret": signing_secret,
    }
    # The scan reads real output: the web process logged requests of this organisation, the workers its tasks.
    web_lines = [json.loads(line) for line in logs["web"].splitlines() if line.startswith("{")]
    assert any(line.get("tenant") == f"t_{slug.replace('-', '_')}" for line in web_lines), logs["web"][-2000:]
    assert "agents.run" in "".join(logs.values()) and "webhooks." in "".join(logs.values())
    leaks = [
        f"{what} in the {name} log" for what, value in used.items() for name, text in logs.items() if value in text
    ]
    assert not leaks, leaks
