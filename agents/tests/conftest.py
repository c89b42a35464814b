"""Fixtures for the agents tests.

`live` gives committed data (autocommit, no test transaction) for tests whose rows other threads or processes
(the run executor's DB threads, daphne, the Celery worker) must see; everything it made is deleted afterwards.
"""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django_tenants.utils import schema_context, tenant_context


def host_of(tenant) -> str:
    from django.conf import settings

    return f"{tenant.slug}.{settings.BASE_DOMAIN}"


def chat_over_websocket(tenant, user, agent_id: int, message: str) -> dict:
    """Send one chat message over /ws/agents/{id}/chat/ as `user` (a JWT of `tenant`, from the tenant's own page)
    and return the first frame the server answers with."""
    from channels.testing import WebsocketCommunicator
    from rest_framework_simplejwt.tokens import RefreshToken

    from accounts.tokens import TENANT_CLAIM
    from config.asgi import application

    refresh = RefreshToken.for_user(user)
    refresh[TENANT_CLAIM] = tenant.schema_name
    host = host_of(tenant)

    async def scenario() -> dict:
        communicator = WebsocketCommunicator(
            application,
            f"/ws/agents/{agent_id}/chat/?token={refresh.access_token}",
            headers=[(b"host", host.encode()), (b"origin", f"http://{host}".encode())],
        )
        connected, _ = await communicator.connect(timeout=10)
        assert connected
        await communicator.send_json_to({"type": "chat", "message": message})
        frame = await communicator.receive_json_from(timeout=10)
        await communicator.disconnect()
        return frame

    return asyncio.run(scenario())


@dataclass
class Live:
    tenant_a: Any
    tenant_b: Any
    admin_a: Any
    admin_b: Any
    made: list[tuple[str, Any]] = field(default_factory=list)

    def principal(self, tenant=None, user=None, role="admin"):
        from iam.policy import Principal

        return Principal(tenant=tenant or self.tenant_a, user=user or self.admin_a, role=role)

    def client(self, tenant=None, user=None) -> Client:
        tenant = tenant or self.tenant_a
        client = Client(HTTP_HOST=host_of(tenant))
        client.force_login(user or (self.admin_a if tenant == self.tenant_a else self.admin_b))
        return client

    def track(self, tenant, obj):
        self.made.append((tenant.schema_name, obj))
        return obj

    def agent(self, tenant=None, **data):
        from agents.services import agent_create

        tenant = tenant or self.tenant_a
        user = self.admin_a if tenant == self.tenant_a else self.admin_b
        with tenant_context(tenant):
            agent = agent_create(principal=self.principal(tenant, user), data={"name": "Helper", **data})
        return self.track(tenant, agent)

    def provider(self, tenant=None, **data):
        from agents.services import provider_create

        tenant = tenant or self.tenant_a
        with tenant_context(tenant):
            provider = provider_create(principal=self.principal(tenant), **{"name": "p", "kind": "openai", **data})
        return self.track(tenant, provider)

    def knowledge_base(self, texts: dict[str, str], tenant=None):
        """A knowledge base at version 1 with one document (one chunk) per title."""
        from knowledge.embeddings import embedder_for_model
        from knowledge.models import Chunk, Document, KnowledgeBase, KnowledgeBaseVersion

        tenant = tenant or self.tenant_a
        embedder = embedder_for_model("hashing-384")  # fast and offline; the real model is the knowledge app's
        with tenant_context(tenant):
            kb = KnowledgeBase.objects.create(
                owner=self.admin_a,
                name="Handbook",
                current_version=1,
                embedding_model=embedder.name,
                embedding_dimension=embedder.dimension,
            )
            KnowledgeBaseVersion.objects.create(knowledge_base=kb, number=1)
            for title, text in texts.items():
                doc = Document.objects.create(knowledge_base=kb, title=title, source_type="text", status="ready")
                Chunk.objects.create(
                    knowledge_base=kb,
                    document=doc,
                    position=0,
                    text=text,
                    content_hash=title,
                    valid_from=1,
                    embedding=embedder.embed([text])[0],
                    embedding_dimension=embedder.dimension,
                )
        return self.track(tenant, kb)


@contextmanager
def live_state(django_db_blocker, settings):
    """Committed data (no test transaction) that other threads and processes can see; what a test
    creates through `Live.track` is deleted afterwards. Shared by `live` here and usage's `committed`."""
    from accounts.models import User
    from tenants.models import Tenant

    settings.AGENTS_ENQUEUE_RUNS = False  # in-process tests execute runs themselves
    settings.SSRF_ALLOWED_NETWORKS = ["127.0.0.0/8"]  # the operator allows the loopback fake servers
    with django_db_blocker.unblock():
        connection.set_schema_to_public()
        state = Live(
            tenant_a=Tenant.objects.get(slug="acme"),
            tenant_b=Tenant.objects.get(slug="globex"),
            admin_a=User.objects.get(email="admin@acme.test"),
            admin_b=User.objects.get(email="admin@globex.test"),
        )
        try:
            yield state
        finally:
            for schema, obj in reversed(state.made):
                with schema_context(schema):
                    type(obj).objects.filter(pk=obj.pk).delete()
            connection.set_schema_to_public()


@pytest.fixture
def live(django_db_setup, django_db_blocker, settings):
    with live_state(django_db_blocker, settings) as state:
        yield state


def run_inline(tenant, run_id: str) -> dict:
    """Execute a queued run in this process (what the agents worker does)."""
    from agents.runtime.runner import execute_run_async

    return asyncio.run(execute_run_async(tenant.schema_name, run_id))


def events_of(tenant, run_id: str, after: int = 0) -> list[dict]:
    from agents.runtime.stream import read_events_now

    return read_events_now(tenant.schema_name, run_id, after)


_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items):
    # pytest-django creates the test database only if a collected test is marked django_db; `live` tests need it.
    # This hook sees the WHOLE session's items, but the `_django_db_marker` override below (no wrapping
    # transaction) only applies in this directory: marking a `live` test elsewhere would silently run it inside
    # a rolled-back transaction that other threads cannot see (usage tests once failed exactly so).
    for item in items:
        if _HERE not in Path(str(item.path)).resolve().parents:
            continue
        if "live" in getattr(item, "fixturenames", ()) and item.get_closest_marker("django_db") is None:
            item.add_marker(pytest.mark.django_db)


@pytest.fixture(autouse=True)
def _django_db_marker(request):
    """pytest-django's marker fixture, except that `live` tests get no wrapping transaction (committed data)."""
    if request.node.get_closest_marker("django_db") and "live" not in request.fixturenames:
        request.getfixturevalue("_django_db_helper")


# --- Real processes: daphne web servers (and the session's Celery worker from the root conftest) ----------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_env(**extra: str) -> dict[str, str]:
    import os

    db = connection.settings_dict
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        TEST_REDIS_URL=settings_redis_url(),
        PYTHONUNBUFFERED="1",
        SSRF_ALLOWED_NETWORKS="127.0.0.0/8",
        **extra,
    )
    return env


def settings_redis_url() -> str:
    from django.conf import settings

    return settings.REDIS_URL


def start_daphne(port: int, log_name: str):
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    from config.processes import WEB, command

    root = Path(__file__).resolve().parents[2]
    (root / "var").mkdir(exist_ok=True)
    log = open(root / "var" / log_name, "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", *command(WEB, port=str(port))],
        cwd=root,
        env=process_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne exited early; see {log.name}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, log
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"daphne did not listen within 60 s; see {log.name}")


def stop_process(proc, log=None) -> None:
    import subprocess

    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
    if log is not None:
        log.close()


@pytest.fixture(scope="session")
def daphne_pair(django_db_setup, django_db_blocker):
    """Two independent daphne web processes on free ports (any of them can serve any run's stream)."""
    with django_db_blocker.unblock():
        started = []
        try:
            for n in range(2):
                port = free_port()
                proc, log = start_daphne(port, f"daphne-agents-{connection.settings_dict['NAME']}-{n}.log")
                started.append((port, proc, log))
            yield [port for port, _, _ in started]
        finally:
            for _, proc, log in started:
                stop_process(proc, log)
