"""The client's end-to-end fixtures: a real daphne web process and the session's Celery workers, reached through
a TCP proxy the tests can cut mid-stream (a dropped connection, as a flaky network or a restarted load balancer
drops it)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.db import connection
from django_tenants.utils import tenant_context

from accounts.models import User
from agents.tests.conftest import free_port, process_env, stop_process
from config.processes import WEB, command
from conftest import PASSWORD, ROOT
from tenants.models import Tenant
from tenants.services import tenant_create, tenant_delete

STARTUP_SECONDS = 180  # daphne imports the whole product (and warms it up) before it listens: slow on a busy machine


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to the web server; `cut()` drops every open connection at once."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.cuts = 0
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._open += [downstream, upstream]
            threading.Thread(target=self._pump, args=(downstream, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, downstream), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(source, sink)

    def _drop(self, *sockets: socket.socket) -> None:
        with self._lock:
            for sock in sockets:
                if sock in self._open:
                    self._open.remove(sock)
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def cut(self) -> None:
        with self._lock:
            connections = list(self._open)
        self._drop(*connections)
        self.cuts += 1

    def close(self) -> None:
        self.listener.close()
        self.cut()


@dataclass
class Server:
    port: int  # daphne itself
    proxy: CuttableProxy
    slug: str  # the client tests' own organisation
    admin_email: str

    @property
    def base_url(self) -> str:
        """The organisation's URL as an integrator writes it; the client connects to the proxy (connect_address)."""
        return f"http://{self.slug}.localhost:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.proxy.port}"


def start_web(port: int):
    """The product's web process (config.processes.WEB) on the test database and Redis, once it listens."""
    log = open(ROOT / "var" / f"daphne-client-{connection.settings_dict['NAME']}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", *command(WEB, port=str(port))], cwd=ROOT, env=process_env(), stdout=log, stderr=log
    )
    deadline = time.monotonic() + STARTUP_SECONDS
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, log
        except OSError:
            time.sleep(0.2)
    stop_process(proc, log)
    raise RuntimeError(f"daphne did not listen within {STARTUP_SECONDS} s; see {log.name}")


@pytest.fixture(scope="session")
def agentry_server(django_db_setup, django_db_blocker, celery_worker_process) -> Iterator[Server]:
    """The web process and an organisation of the client tests' own, dropped afterwards with everything the live
    server wrote for it (runs, usage, events), so nothing leaks into the other tests' organisations."""
    slug = f"client-{uuid.uuid4().hex[:8]}"
    admin_email = f"admin@{slug}.test"
    with django_db_blocker.unblock():
        connection.set_schema_to_public()
        tenant = tenant_create(name=f"Client {slug}", slug=slug, owner_email=admin_email, owner_password=PASSWORD)
        proc, log = start_web(port := free_port())
    proxy = CuttableProxy(port)
    try:
        yield Server(port=port, proxy=proxy, slug=slug, admin_email=admin_email)
    finally:
        proxy.close()
        stop_process(proc, log)
        with django_db_blocker.unblock():
            connection.set_schema_to_public()
            tenant_delete(tenant=tenant)
            # Django's cascade also visits per-tenant tables (memberships, API keys): run it in a schema that has them.
            with tenant_context(Tenant.objects.get(slug="acme")):
                User.objects.filter(email=admin_email).delete()
            connection.set_schema_to_public()


@pytest.fixture(scope="session")
def admin_password() -> str:
    return PASSWORD
