"""Session-wide test fixtures.

Tenants are provisioned once per session (cloning the template schema) and reused; each test runs
in a transaction that is rolled back, so tenant data is "truncated" between tests for free.
Tests that need other processes (Celery workers, daphne) to see data use committed rows only.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import Client

ROOT = Path(__file__).resolve().parent
PASSWORD = "correct-horse-battery-9"
TEST_TENANTS = {"acme": "Acme Corp", "globex": "Globex Inc"}


def _require_services() -> None:
    db = settings.DATABASES["default"]
    for what, host, port in (
        ("PostgreSQL", db.get("HOST") or "127.0.0.1", int(db.get("PORT") or 5432)),
        ("Redis", urlparse(settings.REDIS_URL).hostname, urlparse(settings.REDIS_URL).port or 6379),
    ):
        try:
            socket.create_connection((host, port), timeout=2).close()
        except OSError:
            pytest.exit(
                f"{what} is not reachable at {host}:{port}. Run the suite with `make test`, which starts "
                "the embedded services (the suite never falls back to SQLite or fakes).",
                returncode=3,
            )


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """After pytest-django created and migrated the test database: public tenant, template, test tenants."""
    import redis

    from accounts.models import User
    from tenants.services import public_tenant_ensure, tenant_create

    redis.Redis.from_url(settings.REDIS_URL).flushdb()  # the test Redis DB is ours alone
    shutil.rmtree(settings.MEDIA_ROOT, ignore_errors=True)  # files of rolled-back rows from earlier sessions
    with django_db_blocker.unblock():
        call_command("platform_setup", verbosity=0)
        public_tenant_ensure()
        for slug, name in TEST_TENANTS.items():
            owner = User.objects.create_user(email=f"admin@{slug}.test", password=PASSWORD)
            tenant_create(name=name, slug=slug, owner=owner)
        connection.set_schema_to_public()
    yield
    # Consumer threads and helpers may hold connections; let pytest-django drop the database cleanly.
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


def pytest_sessionstart(session):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")


@pytest.fixture(scope="session", autouse=True)
def _services_up():
    _require_services()


@pytest.fixture(autouse=True)
def _public_schema_after_test():
    yield
    connection.set_schema_to_public()


@pytest.fixture
def tenant_a(db):
    from tenants.models import Tenant

    return Tenant.objects.get(slug="acme")


@pytest.fixture
def tenant_b(db):
    from tenants.models import Tenant

    return Tenant.objects.get(slug="globex")


@pytest.fixture
def admin_a(db):
    from accounts.models import User

    return User.objects.get(email="admin@acme.test")


@pytest.fixture
def admin_b(db):
    from accounts.models import User

    return User.objects.get(email="admin@globex.test")


def host_of(tenant) -> str:
    return f"{tenant.slug}.{settings.BASE_DOMAIN}"


@pytest.fixture
def client_a(tenant_a) -> Client:
    return Client(HTTP_HOST=host_of(tenant_a))


@pytest.fixture
def client_b(tenant_b) -> Client:
    return Client(HTTP_HOST=host_of(tenant_b))


@pytest.fixture
def public_client(db) -> Client:
    return Client(HTTP_HOST=settings.BASE_DOMAIN)


# --- Real processes -----------------------------------------------------------------------------


def test_database_url() -> str:
    """The URL of the database pytest-django created, for worker/server subprocesses."""
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


test_database_url.__test__ = False  # not a test


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=test_database_url(),
        TEST_REDIS_URL=settings.REDIS_URL,
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker):
    """A real Celery worker process on the test database and Redis."""
    with django_db_blocker.unblock():
        env = subprocess_env()
    (ROOT / "var").mkdir(exist_ok=True)
    log = open(ROOT / "var" / f"celery-{connection.settings_dict['NAME']}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool=solo",
            "-l",
            "info",
            "-Q",
            "default,ingest,agents,webhooks",
            "-n",
            f"test-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    from config.celery import app

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"Celery worker exited early; see {log.name}")
        if app.control.ping(timeout=0.5):
            break
    else:
        proc.kill()
        pytest.fail(f"Celery worker did not answer pings within 60s; see {log.name}")
    yield proc
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
