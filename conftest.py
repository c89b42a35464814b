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


@pytest.fixture(scope="session", autouse=True)
def _static_files_collected():
    """Collect static files once, as a deployment does: the production storage serves hashed names from a
    manifest, so a template that names a missing file fails here as it would in production."""
    call_command("collectstatic", "--noinput", "--clear", verbosity=0)


@pytest.fixture(autouse=True)
def _fresh_process_caches():
    """Per-process caches (host -> tenant, quota limits) were filled from rows an earlier test rolled back;
    production clears them when such rows change, which a rollback does not announce."""
    from core.quotas import limits_cache_forget
    from tenants.selectors import tenant_host_cache_clear

    tenant_host_cache_clear()
    limits_cache_forget()


@pytest.fixture(autouse=True)
def _nobody_acting():
    """Tests that call guards directly (RequestFactory) skip RequestIdMiddleware, which scopes the audit actor to
    one request in the product: without this, the next test's audit entries would name that test's user."""
    from core.observability import current_actor
    from core.rls import current_db_principal

    token = current_actor.set(None)
    db_token = current_db_principal.set(None)  # nor do their queries stay restricted to that user (core.rls)
    yield
    current_db_principal.reset(db_token)
    current_actor.reset(token)


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
    """The product's Celery workers (config.processes: prefork for documents and webhooks, threads for chat
    runs), as real processes on the test database and Redis, with the product's settings."""
    from config.celery import app
    from config.processes import WORKERS

    with django_db_blocker.unblock():
        env = subprocess_env()
    env["SSRF_ALLOWED_NETWORKS"] = "127.0.0.0/8"  # the operator allows the loopback fakes (providers, receivers)
    (ROOT / "var").mkdir(exist_ok=True)
    started: list[tuple[subprocess.Popen, object]] = []
    names = set()
    for kind, args in WORKERS.items():
        name = f"test-{kind}-{os.getpid()}@{socket.gethostname()}"
        names.add(name)
        log = open(ROOT / "var" / f"celery-{kind}-{connection.settings_dict['NAME']}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", *args, "-n", name, "--without-gossip", "--without-mingle"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append((proc, log))

    def stop_all() -> None:
        for proc, _ in started:
            proc.terminate()
        for proc, log in started:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()

    deadline = time.monotonic() + 60
    answered: set[str] = set()
    while answered != names:
        if any(proc.poll() is not None for proc, _ in started) or time.monotonic() > deadline:
            stop_all()
            pytest.fail(f"Celery workers {sorted(names - answered)} did not start; see var/celery-*.log")
        answered |= {name for reply in app.control.ping(timeout=0.5) for name in reply} & names
    yield [proc for proc, _ in started]
    stop_all()


# --- Tests per marker: a suite that skipped or never ran shows in the summary -----------------------------

# The terminal reporter's categories, folded: an expected failure proves as little as a skip.
_OUTCOMES = {
    "passed": "passed",
    "xpassed": "passed",
    "failed": "failed",
    "error": "failed",
    "skipped": "skipped",
    "xfailed": "skipped",
}
_suite_of: dict[str, str] = {}  # test id -> its registered markers ("browser + e2e") or "unmarked"


def pytest_collection_finish(session: pytest.Session) -> None:
    registered = {line.split(":", 1)[0].strip() for line in session.config.getini("markers")}
    for item in session.items:
        marks = sorted(registered & {mark.name for mark in item.iter_markers()})
        _suite_of[item.nodeid] = " + ".join(marks) or "unmarked"


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Per marker, how many tests ran and how they ended: CI=true must show its e2e and browser suites ran."""
    worst: dict[str, str] = {}  # test id -> its worst phase: a passing call with a failing teardown failed
    rank = ["passed", "skipped", "failed"]
    for category, reports in terminalreporter.stats.items():
        for report in reports:
            outcome = _OUTCOMES.get(category)
            if outcome and isinstance(report, pytest.TestReport):
                previous = worst.get(report.nodeid, "passed")
                worst[report.nodeid] = max(previous, outcome, key=rank.index)
    counts: dict[str, dict[str, int]] = {}
    for nodeid, outcome in worst.items():
        suite = counts.setdefault(_suite_of.get(nodeid, "unmarked"), dict.fromkeys(rank, 0))
        suite[outcome] += 1
    if not counts:
        return
    terminalreporter.write_sep("=", "tests per marker")
    width = max(len(name) for name in counts)
    for name, suite in sorted(counts.items()):
        summary = ", ".join(f"{suite[outcome]} {outcome}" for outcome in ("passed", "failed", "skipped"))
        terminalreporter.write_line(f"{name:<{width}}  {sum(suite.values()):>5} tests: {summary}")
