"""scripts/pg_pitr.py on a private embedded PostgreSQL (temp dir, free ports; never the shared cluster): archive
WAL, take a base backup, write rows, note the time, write more, restore to the noted time into a new data
directory on another port, and find only the rows written before it."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pg_pitr.py"
spec = importlib.util.spec_from_file_location("pg_pitr", SCRIPT)
assert spec and spec.loader
pg_pitr = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pg_pitr)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Not under pytest's tmp_path: the server runs as an unprivileged user who must reach the folder.
    path = Path(tempfile.mkdtemp(prefix="pitr-"))
    path.chmod(0o755)
    yield path
    for pgdata in (path / "primary", path / "restored"):
        if (pgdata / "postmaster.pid").exists():
            subprocess.run(
                [pg_pitr.pg_bin("pg_ctl"), "-D", str(pgdata), "-m", "immediate", "-w", "stop"],
                user=pg_pitr.run_user(),
                check=False,
                stdout=subprocess.DEVNULL,
            )
    shutil.rmtree(path, ignore_errors=True)


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, str(SCRIPT), *args], check=True, timeout=180)


def test_restore_to_a_time_keeps_only_what_was_committed_before_it(workdir: Path):
    primary, archive, backup, restored = (workdir / n for n in ("primary", "wal", "base", "restored"))
    port, restored_port = _free_port(), _free_port()
    primary.mkdir(mode=0o700)
    pg_pitr.give_to_server(primary)
    subprocess.run(
        [pg_pitr.pg_bin("initdb"), "-D", str(primary), "--auth=trust", "-U", "postgres"],
        user=pg_pitr.run_user(),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    pg_pitr.pg_ctl(
        primary,
        "-l",
        str(primary / "server.log"),
        "-o",
        f"-h 127.0.0.1 -p {port} -c unix_socket_directories=''",
        "start",
    )

    _cli("configure", "--port", str(port), "--archive", str(archive), "--pgdata", str(primary), "--restart")
    assert pg_pitr.psql(port, "SHOW archive_mode") == "on"
    _cli("basebackup", "--port", str(port), "--dest", str(backup))

    pg_pitr.psql(port, "CREATE TABLE notes (id int PRIMARY KEY); INSERT INTO notes SELECT generate_series(1, 3)")
    time.sleep(0.2)
    noted = pg_pitr.psql(port, "SELECT now()")  # the server's clock, as recovery compares commit times with it
    time.sleep(0.2)
    pg_pitr.psql(port, "INSERT INTO notes SELECT generate_series(4, 6)")
    segment = pg_pitr.psql(port, "SELECT pg_walfile_name(pg_current_wal_lsn())")
    pg_pitr.psql(port, "SELECT pg_switch_wal()")
    deadline = time.monotonic() + 30
    while not (archive / segment).exists():  # restore reads only the archive
        assert time.monotonic() < deadline, "WAL segment never archived"
        time.sleep(0.1)

    _cli(
        "restore",
        *("--backup", str(backup), "--archive", str(archive), "--target-time", noted),
        *("--pgdata", str(restored), "--port", str(restored_port)),
    )
    assert pg_pitr.psql(restored_port, "SELECT string_agg(id::text, ',' ORDER BY id) FROM notes") == "1,2,3"
    assert pg_pitr.psql(restored_port, "SELECT pg_is_in_recovery()") == "f"  # promoted: usable for writes
    assert pg_pitr.psql(port, "SELECT count(*) FROM notes") == "6"  # the original is untouched
