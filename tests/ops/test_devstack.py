"""`make up` as a person runs it: fresh data folder, its own ports, nothing else given.

It must print the demo login and the URL last, once the workers are ready, and a SIGTERM to make must stop every
process it started (PostgreSQL and Redis included) and close every port it opened. Slow: a fresh initdb and all
migrations.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest

from conftest import ROOT
from tests.prerequisites import require_prerequisite

pytestmark = pytest.mark.e2e

PR_SET_CHILD_SUBREAPER = 36
START_TIMEOUT = 300  # fresh initdb, every migration, collectstatic, the workers loading the app
STOP_TIMEOUT = 45  # devstack gives its children 15 s, then stops PostgreSQL and Redis
URL_LINE = re.compile(r"^\[devstack\] open (http://\S+)")


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def process_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state, start time) of every process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
        table[int(entry.name)] = (int(fields[1]), fields[0], fields[19])
    return table


def descendants(root: int) -> set[tuple[int, str]]:
    """(pid, start time) of every living descendant of `root`: the start time tells a reused pid apart."""
    table = process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            if table[pid][1] != "Z":
                found.add((pid, table[pid][2]))
            todo.append(pid)
    return found


def alive(tracked: set[tuple[int, str]]) -> set[tuple[int, str]]:
    """The tracked processes still running; zombies left to us (we are their subreaper) are reaped."""
    table = process_table()
    living = set()
    for pid, started in tracked:
        if pid not in table or table[pid][2] != started:
            continue
        if table[pid][1] == "Z":
            if table[pid][0] == os.getpid():
                os.waitpid(pid, os.WNOHANG)
            continue
        living.add((pid, started))
    return living


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_make_up_prints_the_login_last_and_sigterm_to_make_leaves_nothing_behind():
    require_prerequisite("make", present=shutil.which("make") is not None, hint="`apt-get install -y make`")
    web_port, pg_port, redis_port = free_ports(3)
    work = Path(tempfile.mkdtemp(prefix="agentry-make-up-"))
    home, tmp = work / "home", work / "tmp"
    home.mkdir()
    tmp.mkdir()
    # What a person's shell gives: no service URLs, no settings module, no runtime dir; empty HOME and TMPDIR
    # show whether anything is written outside the data folder.
    env = {name: os.environ[name] for name in ("PATH", "LANG", "LC_ALL") if name in os.environ}
    env.update(
        HOME=str(home),
        TMPDIR=str(tmp),
        AGENTRY_VAR_DIR=str(work / "var"),
        EMBEDDED_PG_PORT=str(pg_port),
        EMBEDDED_REDIS_PORT=str(redis_port),
        PORT=str(web_port),
        WORKER_PRELOAD_EMBEDDER="0",  # the workers are ready sooner; the demo document still loads the model
    )
    libc = ctypes.CDLL(None, use_errno=True)
    # As the subreaper of what make starts, we keep the daemonised PostgreSQL and Redis in our process tree.
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1)
    before = descendants(os.getpid())
    tracked: set[tuple[int, str]] = set()
    lines: list[str] = []
    url_at: list[int] = []  # index of the URL line in `lines`
    ready = threading.Event()

    def read(stream: Iterable[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))
            if URL_LINE.match(lines[-1]):
                url_at.append(len(lines) - 1)
                ready.set()

    # `-o`: the venv running this test is the one under test, never rebuilt here.
    make = subprocess.Popen(
        ["make", "-o", ".venv/.installed", "up"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    reader = threading.Thread(target=read, args=(make.stdout,), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.wait(0.5):
            tracked |= descendants(os.getpid()) - before
            assert make.poll() is None, "make up exited before printing the URL:\n" + "\n".join(lines[-40:])
            assert time.monotonic() < deadline, f"no URL within {START_TIMEOUT}s:\n" + "\n".join(lines[-40:])
        tracked |= descendants(os.getpid()) - before
        started = " | ".join(cmdline(pid) for pid, _ in tracked)
        for what in ("daphne", "dev-ingest@", "dev-agents@", " beat ", "postgres -D", "redis-server"):
            assert what in started, f"{what!r} is not among the processes make up started"

        # Last: the demo login, then the URL; both after every worker's banner and its "ready." line. (The
        # workers' own logs may follow: the demo document is processed meanwhile.)
        at = url_at[0]
        url = URL_LINE.match(lines[at]).group(1)
        assert lines[at - 1].startswith("Demo login: admin@demo.example.com / "), lines[at - 5 : at + 1]
        assert not [line for line in lines[at + 1 :] if line.startswith("[devstack]")]
        for worker in ("dev-ingest@", "dev-agents@"):
            banner = [i for i, line in enumerate(lines) if re.search(rf"-{{5,}} {worker}", line)]
            ready_line = [i for i, line in enumerate(lines) if worker in line and line.endswith(" ready.")]
            assert banner and ready_line, f"no banner or no ready line of {worker}"
            assert banner[0] < ready_line[0] < at - 1

        host, port = url.removeprefix("http://").rstrip("/").split(":")
        answer = httpx.get(f"http://127.0.0.1:{port}/", headers={"Host": f"{host}:{port}"}, timeout=10)
        assert answer.status_code in (200, 302), answer.status_code
        assert all(port_open(p) for p in (web_port, pg_port, redis_port))

        make.send_signal(signal.SIGTERM)
        stopped_by = time.monotonic() + STOP_TIMEOUT
        make.wait(STOP_TIMEOUT)
        while alive(tracked) and time.monotonic() < stopped_by:
            time.sleep(0.2)
        left = alive(tracked)
        assert not left, "still running after SIGTERM to make:\n" + "\n".join(cmdline(pid) for pid, _ in left)
        assert not [p for p in (web_port, pg_port, redis_port) if port_open(p)], "a port is still open"
        written = sorted(str(path) for path in [*home.rglob("*"), *tmp.rglob("*")])
        assert not written, f"make up wrote outside its data folder: {written}"
    finally:
        for pid, _ in alive(tracked):
            with contextlib.suppress(ProcessLookupError):  # ended meanwhile
                os.kill(pid, signal.SIGKILL)
        if make.poll() is None:
            make.kill()
        make.wait()
        time.sleep(0.2)
        alive(tracked)  # reaps the killed ones
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0)
        reader.join(5)
        shutil.rmtree(work, ignore_errors=True)
