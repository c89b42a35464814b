"""Reads scale out: PgBouncer in transaction pooling mode in front of PostgreSQL, and a streaming read replica.

- Transaction pooling: PgBouncer hands each transaction to whichever server session is free, so a session-level
  `SET search_path` (django-tenants) or `set_config(..., false)` (row-level security) made by one client is seen by
  the next client of that session. With DB_TRANSACTION_POOLING the product sets its state per transaction; a Django
  process of the product's settings runs thousands of interleaved queries of two organisations through PgBouncer
  (tests/reliability/pooled_queries.py) and none may run in the other organisation's schema or as its principal.
- Replica: a private primary holding a copy of the session's database and a standby made by `pg_basebackup -R`
  (streaming replication). With replay paused on the standby, a row written on the primary is missing from what
  the replica serves, which shows where reads go; a request that wrote, and a client that wrote a moment ago, read
  the primary (read-your-writes).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from django.db import connection
from django_tenants.utils import tenant_context

from tests.prerequisites import require_prerequisite

from .services import (
    ROOT,
    PrivatePostgres,
    _pg_bin,
    api,
    free_port,
    port_open,
    private_postgres,
    product_env,
    product_processes,
    session_database_url,
    wait_for,
)

pytestmark = [pytest.mark.reliability, pytest.mark.e2e, pytest.mark.django_db]

PGBOUNCER = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)


# --- PgBouncer ---------------------------------------------------------------------------------------


@contextmanager
def pgbouncer(*, server_port: int, pool_size: int) -> Iterator[int]:
    """PgBouncer in transaction pooling mode on a free port, in front of the PostgreSQL on `server_port`, with at
    most `pool_size` server sessions per database: many clients share few sessions, as in production."""
    require_prerequisite("PgBouncer", present=PGBOUNCER is not None, hint="apt-get install pgbouncer")
    folder = Path(tempfile.mkdtemp(prefix="agentry-pgbouncer-"))
    port = free_port()
    (folder / "users.txt").write_text('"postgres" ""\n')
    (folder / "pgbouncer.ini").write_text(
        f"""[databases]
* = host=127.0.0.1 port={server_port}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder}/users.txt
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 200
ignore_startup_parameters = extra_float_digits
logfile = {folder}/pgbouncer.log
"""
    )
    args = [PGBOUNCER, str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root: -u drops to the embedded PostgreSQL's user
        user = "embedded_postgres"
        owner = pwd.getpwnam(user)
        for path in (folder, *folder.iterdir()):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        args[1:1] = ["-u", user]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # noqa: S603
    try:
        wait_for(lambda: port_open(port) or proc.poll() is not None, timeout=20, what="PgBouncer to listen")
        log = folder / "pgbouncer.log"
        assert proc.poll() is None, f"PgBouncer exited: {log.read_text() if log.exists() else ''}"
        yield port
    finally:
        proc.kill()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def two_orgs(django_db_setup, django_db_blocker) -> Iterator[list[dict]]:
    """Two organisations of the test's own, each with knowledge bases of distinct names, committed (another process
    reads them), dropped afterwards."""
    from accounts.models import User
    from iam.policy import Principal
    from knowledge.services import knowledge_base_create
    from tenants.models import Tenant
    from tenants.services import tenant_create, tenant_delete

    made = []
    with django_db_blocker.unblock():
        try:
            for letter in "ab":
                slug = f"pool-{letter}-{uuid.uuid4().hex[:6]}"
                connection.set_schema_to_public()
                admin = User.objects.create_user(email=f"admin@{slug}.test", password=uuid.uuid4().hex)
                tenant = tenant_create(name=f"Pool {slug}", slug=slug, owner=admin)
                made.append((tenant, admin))
                with tenant_context(tenant):
                    principal = Principal(tenant=tenant, user=admin, role="admin")
                    names = [f"{slug} handbook {i}" for i in range(3)]
                    for name in names:
                        knowledge_base_create(principal=principal, name=name)
            yield [
                {
                    "schema": tenant.schema_name,
                    "user_id": admin.pk,
                    "kb_names": [f"{tenant.slug} handbook {i}" for i in range(3)],
                }
                for tenant, admin in made
            ]
        finally:
            acme = Tenant.objects.get(slug="acme")
            for tenant, admin in made:
                connection.set_schema_to_public()
                tenant_delete(tenant=tenant)
                with tenant_context(acme):  # the cascade visits per-tenant tables (memberships, API keys)
                    User.objects.filter(pk=admin.pk).delete()
            connection.set_schema_to_public()


def test_transaction_pooling_never_runs_a_query_in_another_organisations_schema(two_orgs):
    database = connection.settings_dict
    with pgbouncer(server_port=int(database["PORT"]), pool_size=2) as port:
        env = product_env(
            redis_url=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:63799/0"),
            database_url=f"postgres://{database['USER']}@127.0.0.1:{port}/{database['NAME']}",
            DB_TRANSACTION_POOLING="true",
        )
        run = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "tests.reliability.pooled_queries", json.dumps(two_orgs)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["mismatches"] == [], f"{report['mismatch_count']} queries saw another organisation's state"
    assert report["queries"] >= 5000
    # Eight clients over two server sessions: each client's transactions moved between sessions, which is what
    # would carry one organisation's session state into the other's queries.
    assert max(report["sessions_per_thread"]) == 2, report
    print(f"{report['queries']} checked queries, server sessions per client: {report['sessions_per_thread']}")


# --- Streaming replica -------------------------------------------------------------------------------


@contextmanager
def streaming_replica(primary: PrivatePostgres) -> Iterator[PrivatePostgres]:
    """A hot standby of `primary`: `pg_basebackup -R` (which writes standby.signal and the primary's address), then
    started, replaying the primary's WAL as it streams in."""
    standby = PrivatePostgres(primary.folder.parent / "standby")
    standby.folder.mkdir(mode=0o700)
    if standby.user:
        owner = pwd.getpwnam(standby.user)
        os.chown(standby.folder, owner.pw_uid, owner.pw_gid)
    standby._run(
        [_pg_bin("pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres"]
        + ["-D", str(standby.folder), "-R", "-X", "stream", "-c", "fast"],
    )
    standby.start()
    try:
        yield standby
    finally:
        if standby.running():
            standby.stop("immediate")


def _one(url: str, query: str) -> object:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query).fetchone()[0]


def caught_up(primary: PrivatePostgres, standby: PrivatePostgres) -> None:
    lsn = _one(primary.url, "SELECT pg_current_wal_lsn()")
    wait_for(
        lambda: _one(standby.url, f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"),
        timeout=30,
        what="the standby to replay the primary's WAL",
    )


# Inside one unit of work (what a request is): reads from the replica until it writes, then from the primary.
IN_ONE_REQUEST = """
import json, sys, django
django.setup()
from django.db import connections
from core.db import read_alias, reads_from_replica, unit_of_work
from core.tenancy import in_tenant
from knowledge.models import KnowledgeBase

def where():
    alias = read_alias()
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_is_in_recovery()")
        return alias, cursor.fetchone()[0], KnowledgeBase.objects.filter(name="Written later").exists()

with in_tenant(sys.argv[1]), unit_of_work(), reads_from_replica():
    before = where()
    KnowledgeBase.objects.filter(name="Replicated").update(description="edited in this request")
    after = where()
print(json.dumps({"before": before, "after": after}))
"""


def test_reads_go_to_a_streaming_replica_and_a_writer_reads_its_own_writes(org, tmp_path):
    with (
        private_postgres(tmp_path, copy_of=session_database_url()) as primary,
        streaming_replica(primary) as standby,
    ):
        env = product_env(
            redis_url=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:63799/0"),
            database_url=primary.url,
            DATABASE_REPLICA_URL=standby.url,
        )
        with product_processes("replica", env) as processes:
            _web, port = processes.web()
            with api(port, org.slug, org.key) as client:
                assert client.post("/api/v1/knowledge-bases/", json={"name": "Replicated"}).status_code == 201
                caught_up(primary, standby)
                _one(standby.url, "SELECT pg_wal_replay_pause()")
                wait_for(
                    lambda: _one(standby.url, "SELECT pg_get_wal_replay_pause_state()") == "paused",
                    timeout=10,
                    what="replay to pause",
                )
                written = client.post("/api/v1/knowledge-bases/", json={"name": "Written later"})
                assert written.status_code == 201
                pin = written.cookies.get("agentry_primary")
                assert pin, "a request that wrote pins its client to the primary"

                # A client that did not write reads the replica: in the organisation's schema, as its principal
                # (the private knowledge base is visible), without the row the standby has not replayed yet.
                names = [kb["name"] for kb in client.get("/api/v1/knowledge-bases/").json()["results"]]
                assert names == ["Replicated"]
                # The writer reads the primary for a few seconds: its own write is there.
                pinned = client.get("/api/v1/knowledge-bases/", headers={"Cookie": f"agentry_primary={pin}"})
                assert sorted(kb["name"] for kb in pinned.json()["results"]) == ["Replicated", "Written later"]

                run = subprocess.run(  # noqa: S603
                    [sys.executable, "-c", IN_ONE_REQUEST, org.tenant.schema_name],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                assert run.returncode == 0, run.stderr[-3000:]
                report = json.loads(run.stdout.strip().splitlines()[-1])
                assert report == {"before": ["replica", True, False], "after": ["default", False, True]}
                _one(standby.url, "SELECT pg_wal_replay_resume()")
                caught_up(primary, standby)
                names = [kb["name"] for kb in client.get("/api/v1/knowledge-bases/").json()["results"]]
                assert sorted(names) == ["Replicated", "Written later"]
