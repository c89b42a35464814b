"""Browser journeys: a real daphne process on a free port, the real Celery worker, headless Debian Chromium.

Everything a journey sees is committed (the server is another process): journeys create their own
organisations with unique slugs instead of relying on the session tenants, so nothing has to be cleaned up.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from config.processes import WEB, command
from conftest import PASSWORD, ROOT, subprocess_env
from tests.prerequisites import require_prerequisite

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # *.localhost is loopback in Chromium already; pin it to IPv4 where daphne listens.
    "--host-resolver-rules=MAP *.localhost 127.0.0.1, MAP localhost 127.0.0.1",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    port: int
    mail_dir: Path
    proc: subprocess.Popen

    def url(self, slug: str | None = None, path: str = "/") -> str:
        host = f"{slug}.localhost" if slug else "localhost"
        return f"http://{host}:{self.port}{path}"

    def api(self, slug: str, method: str, path: str, **kwargs) -> httpx.Response:
        """Call the API as an outside client would: by IP with the tenant's Host header."""
        headers = {"Host": f"{slug}.localhost:{self.port}", **kwargs.pop("headers", {})}
        return httpx.request(method, f"http://127.0.0.1:{self.port}{path}", headers=headers, timeout=30, **kwargs)

    def mails_to(self, address: str) -> list[str]:
        """Raw text of every message sent to `address` (the file email backend writes one file per connection)."""
        found = []
        for file in sorted(self.mail_dir.glob("*.log")):
            for message in file.read_text().split("-" * 79):
                if re.search(rf"^To: .*{re.escape(address)}", message, re.MULTILINE | re.IGNORECASE):
                    found.append(message)
        return found

    def wait_for_link(self, address: str, pattern: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in reversed(self.mails_to(address)):
                # Quoted-printable soft line breaks would split long links.
                body = message.replace("=\n", "")
                match = re.search(pattern, body)
                if match:
                    return match.group(0)
            time.sleep(0.2)
        raise AssertionError(f"no mail to {address} with a link matching {pattern!r} within {timeout}s")


@pytest.fixture(scope="session")
def playwright(app_server):
    """pytest-playwright's fixture, started after the test database and server exist: Playwright's sync API
    keeps an event loop on the main thread, and Django refuses ORM calls (session setup/teardown) under it."""
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    # From here on the main thread "has a running event loop"; the tests' own ORM calls are safe (sync code).
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield pw
    pw.stop()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


def pytest_collection_modifyitems(session, config, items):
    """Browser journeys run last, so Playwright's event loop never sits under the rest of the suite."""
    here = Path(__file__).parent
    browser = [item for item in items if here in Path(str(item.path)).parents]
    if browser:
        items[:] = [item for item in items if item not in browser] + browser


@pytest.fixture(scope="session")
def browser_type_launch_args():
    require_prerequisite(
        f"Chromium at {CHROMIUM}", present=Path(CHROMIUM).exists(), hint="`apt-get install -y chromium` (.ci/run does)"
    )
    return {"executable_path": CHROMIUM, "headless": True, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args():
    return {
        "viewport": {"width": 1280, "height": 860},
        "locale": "en-GB",
        "timezone_id": "UTC",
        "permissions": ["clipboard-read", "clipboard-write"],
    }


@pytest.fixture(scope="session")
def app_server(django_db_setup, django_db_blocker, tmp_path_factory) -> LiveServer:
    """daphne serving HTTP and WebSocket on the test database, like production."""
    port = free_port()
    mail_dir = tmp_path_factory.mktemp("mail")
    with django_db_blocker.unblock():
        env = subprocess_env()
    env.update(
        DJANGO_SETTINGS_MODULE="tests.browser.server_settings",
        BROWSER_MAIL_DIR=str(mail_dir),
        BASE_DOMAIN="localhost",
        PUBLIC_PORT=str(port),
        PUBLIC_SCHEME="http",
        ACCOUNT_EMAIL_VERIFICATION="mandatory",
    )
    (ROOT / "var").mkdir(exist_ok=True)
    log = open(ROOT / "var" / f"daphne-{env['DATABASE_URL'].rsplit('/', 1)[-1]}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", *command(WEB, port=str(port))],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"daphne exited early; see {log.name}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"Host": "localhost"}, timeout=2).is_success:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"daphne did not answer /healthz within 60s; see {log.name}")
        time.sleep(0.25)
    yield LiveServer(port=port, mail_dir=mail_dir, proc=proc)
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


CSP_VIOLATION_REPORTER = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(`Content Security Policy violation: ${event.violatedDirective} blocked ${event.blockedURI || "inline"}`
    + ` (${event.sourceFile || ""}:${event.lineNumber || ""})`);
});
"""


class ConsoleWatcher:
    """Collects JavaScript errors (uncaught exceptions and console.error) from every watched page."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.allowed: list[str] = []

    def watch(self, page) -> None:
        # Content-Security-Policy violations are reported as errors too, whether or not the browser logs them.
        page.add_init_script(CSP_VIOLATION_REPORTER)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc} (at {page.url})"))
        page.on(
            "console",
            lambda msg: msg.type == "error" and self.errors.append(f"console.error: {msg.text} (at {page.url})"),
        )

    def allow(self, pattern: str) -> None:
        """Expected errors only: e.g. the browser's own report of a 404 the test asked for."""
        self.allowed.append(pattern)

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(re.search(p, e) for p in self.allowed)]


@pytest.fixture
def console(page):
    watcher = ConsoleWatcher()
    watcher.watch(page)
    page.set_default_timeout(20_000)
    yield watcher
    errors = watcher.unexpected()
    assert not errors, "JavaScript errors in the browser console:\n" + "\n".join(errors)


def committed(fn, *args, **kwargs):
    """Run `fn` on its own thread and database connection, outside the test's transaction, so it commits
    and the server process sees the rows. Journeys make their own organisations: nothing to clean up."""
    from django.db import connection

    def run():
        try:
            return fn(*args, **kwargs)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def unique_slug(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def org_factory(db):
    """Commits a fresh organisation with its admin (the server process must see it). Returns (slug, email)."""

    def make(prefix: str = "org", *, name: str | None = None) -> tuple[str, str]:
        from django.db import connection

        from tenants.services import tenant_create

        slug = unique_slug(prefix)
        email = f"admin@{slug}.test"

        def create():
            tenant_create(name=name or slug.title(), slug=slug, owner_email=email, owner_password=PASSWORD)
            connection.set_schema_to_public()
            _mark_email_verified(email)

        committed(create)
        return slug, email

    return make


def _mark_email_verified(email: str) -> None:
    """Organisations made outside the sign-up journey skip the verification mail (that journey tests it)."""
    from allauth.account.models import EmailAddress

    from accounts.models import User

    user = User.objects.get(email=email)
    EmailAddress.objects.update_or_create(user=user, email=email, defaults={"verified": True, "primary": True})


def login(page, server: LiveServer, slug: str, email: str, password: str = PASSWORD) -> None:
    page.goto(server.url(slug, "/accounts/login/"))
    page.get_by_label(re.compile("^Email", re.I)).fill(email)
    page.get_by_label(re.compile("^Password", re.I)).fill(password)
    page.get_by_role("button", name=re.compile("sign in|log in", re.I)).click()
    page.wait_for_load_state()
