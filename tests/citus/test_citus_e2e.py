"""The product on a Citus cluster: a coordinator and two workers (scripts/citus.py, Citus built from
../shared/vendor), the product's own processes (daphne, the Celery workers) on it with DATABASE_CITUS on.

Two organisations provisioned by the product land on different workers (citus_schemas, citus_shards); each gets
a knowledge base ingested by the worker, a search and a chat (the offline provider) through the HTTP API; then one
organisation moves to the other worker (`manage.py tenant_move`) while searches and chats keep arriving, and every
one of them succeeds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from agentry import Agentry

from tests.prerequisites import require_prerequisite
from tests.reliability.services import PrivateRedis, Processes, free_port, port_open, product_env, wait_for

# Building Citus (first run), three nodes, the migrations and two distributed organisations take minutes on 2 cores.
pytestmark = [pytest.mark.citus, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
CITUS = [sys.executable, str(ROOT / "scripts" / "citus.py")]
PASSWORD = "Citus-e2e-password-1"
ORGS = ("citus-a", "citus-b")
HANDBOOK = {
    "citus-a": "Refunds are accepted within 30 days of purchase. Refunds go back to the card used.",
    "citus-b": "Parcels leave the warehouse every weekday at noon. Express parcels arrive the next day.",
}
QUESTION = {"citus-a": "Within how many days are refunds accepted?", "citus-b": "When do parcels leave the warehouse?"}
ANSWER = {"citus-a": "30 days", "citus-b": "noon"}
# Run in the product's own shell on the cluster: the shared schema, the template, then the product's provisioning
# (tenants.services.tenant_create, as sign-up, the API and create_tenant do) for both organisations.
SETUP = f"""
from django.core.management import call_command
from tenants.services import tenant_create
call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)
call_command("platform_setup", verbosity=0)
for slug in {ORGS!r}:
    tenant_create(name=slug, slug=slug, owner_email=f"admin@{{slug}}.test", owner_password={PASSWORD!r})
"""


def free_base_port(count: int) -> int:
    """A port with the `count - 1` ports after it free as well (the coordinator, then the workers)."""
    for _ in range(50):
        base = free_port()
        if base + count < 65536 and not any(port_open(base + i) for i in range(count)):
            return base
    raise RuntimeError("no free run of ports for the Citus cluster")


@dataclass
class Cluster:
    port: int
    url: str

    def query(self, sql: str, *args: object) -> list[tuple]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(sql, args).fetchall()

    def node_of(self, slug: str) -> int:
        """The port of the worker holding the organisation's schema (every shard of it on one node)."""
        rows = self.query(
            "SELECT DISTINCT s.nodeport FROM citus_schemas d JOIN citus_shards s ON s.colocation_id = d.colocation_id"
            " WHERE d.schema_name::text = %s",
            "t_" + slug.replace("-", "_"),
        )
        assert len(rows) == 1, f"{slug}'s shards are on {rows}"
        return rows[0][0]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    missing = subprocess.run([*CITUS, "check"], capture_output=True, text=True)
    require_prerequisite(
        "A Citus build",
        present=missing.returncode == 0,
        hint=f"{missing.stdout.strip()}: install gcc and make (apt-get install gcc make); the source is "
        "../shared/vendor/citus-14.0.1.tar.gz; `python scripts/citus.py build` builds it once",
    )
    subprocess.run([*CITUS, "build"], check=True, timeout=900)
    # Not under pytest's tmp_path: PostgreSQL runs as an unprivileged user, which must reach its folders.
    data = Path(tempfile.mkdtemp(prefix="agentry-citus-"))
    data.chmod(0o755)  # noqa: S103 - the server's user must traverse it; it holds test data only
    port = free_base_port(3)
    args = ["--data", str(data), "--port", str(port), "--workers", "2"]
    try:
        started = subprocess.run([*CITUS, "start", *args], check=True, timeout=300, stdout=subprocess.PIPE, text=True)
        url = started.stdout.strip().removeprefix("DATABASE_URL=")
        yield Cluster(port=port, url=url)
    finally:
        subprocess.run([*CITUS, "stop", *args], timeout=120)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def product(cluster: Cluster, tmp_path_factory) -> Iterator[dict]:
    """Daphne and the Celery workers on the cluster, with a Redis of their own (the session's workers, on the test
    database, must not take these tasks), and both organisations provisioned."""
    redis = PrivateRedis(tmp_path_factory.mktemp("citus-redis"))
    redis.start()
    env = product_env(
        redis_url=redis.url,
        database_url=cluster.url,
        DATABASE_CITUS="true",
        WORKER_PRELOAD_EMBEDDER="0",  # the knowledge bases use the hashing embedder: no model to load
        # The move test chats and searches back to back, faster than a person's limits allow (operator settings).
        RATE_LIMITS='{"chat": "10000/m", "search": "10000/m"}',
        RATE_LIMITS_TENANT='{"chat": "20000/m", "search": "20000/m"}',
    )
    processes = Processes("citus", env)
    try:
        subprocess.run([sys.executable, "manage.py", "shell", "-c", SETUP], cwd=ROOT, env=env, check=True, timeout=600)
        ingest = processes.worker("ingest", wait=False)
        agents = processes.worker("agents", wait=False)
        _, port = processes.web()
        processes.wait_ready(ingest)
        processes.wait_ready(agents)
        yield {"port": port, "env": env}
    finally:
        processes.stop_all()
        redis.stop()


def client_for(port: int, slug: str) -> Agentry:
    return Agentry(
        f"http://{slug}.localhost:{port}",
        email=f"admin@{slug}.test",
        password=PASSWORD,
        connect_address=f"127.0.0.1:{port}",
        timeout=60,
    )


@pytest.fixture(scope="module")
def worlds(product: dict) -> Iterator[dict[str, dict]]:
    """Per organisation: a knowledge base with its handbook ingested by the worker, and an agent answering from it
    with the offline provider."""
    out = {}
    for slug in ORGS:
        client = client_for(product["port"], slug)
        kb = client.create_knowledge_base("Handbook", embedding_model="hashing-384")
        ingest = client.upload(kb["id"], texts=[{"title": "Handbook", "text": HANDBOOK[slug]}])
        client.wait_until_ready(kb["id"], ingest, timeout=180)
        agent = client.create_agent("Helper", knowledge_base_ids=[kb["id"]])
        out[slug] = {"client": client, "kb": kb["id"], "agent": agent["id"]}
    yield out
    for world in out.values():
        world["client"].close()


def search(world: dict, slug: str) -> None:
    hits = world["client"].search(world["kb"], QUESTION[slug], top_k=1)["results"]
    assert hits and ANSWER[slug] in hits[0]["text"], hits


def chat(world: dict, slug: str) -> None:
    answer = world["client"].chat(world["agent"], QUESTION[slug], timeout=120)
    assert answer["status"] == "complete", answer
    assert ANSWER[slug] in json.dumps(answer), answer


def search_and_chat(world: dict, slug: str) -> None:
    search(world, slug)
    chat(world, slug)


def test_organisations_on_two_workers_chat_and_search(cluster: Cluster, worlds: dict[str, dict]):
    workers = {row[0] for row in cluster.query("SELECT nodeport FROM pg_dist_node WHERE groupid <> 0")}
    assert len(workers) == 2
    distributed = {row[0] for row in cluster.query("SELECT schema_name::text FROM citus_schemas")}
    assert distributed == {"t_citus_a", "t_citus_b"}  # the template stays a plain schema on the coordinator
    placed = {slug: cluster.node_of(slug) for slug in ORGS}
    assert set(placed.values()) == workers, placed  # one organisation on each worker
    # What tenant tables reference is copied to every node.
    reference = {
        row[0]
        for row in cluster.query("SELECT table_name::text FROM citus_tables WHERE citus_table_type = 'reference'")
    }
    assert "accounts_user" in reference
    for slug in ORGS:
        search_and_chat(worlds[slug], slug)


def test_organisation_moved_to_the_other_worker_while_serving(cluster: Cluster, product: dict, worlds: dict):
    slug, other = ORGS
    before, target = cluster.node_of(slug), cluster.node_of(other)
    assert before != target
    done = threading.Event()
    served: list[tuple[float, float]] = []  # (start, end) of each request that succeeded
    failures: list[str] = []

    def serve() -> None:
        while not done.is_set():
            for request in (search, chat):
                start = time.monotonic()
                try:
                    request(worlds[slug], slug)
                    served.append((start, time.monotonic()))
                except Exception as exc:  # every failure is reported: none may happen during the move
                    failures.append(repr(exc))

    traffic = threading.Thread(target=serve)
    traffic.start()
    try:
        wait_for(lambda: served or failures, timeout=120, what="the first request before the move")
        move_start = time.monotonic()
        moved = subprocess.run(
            [sys.executable, "manage.py", "tenant_move", slug, "--to", f"127.0.0.1:{target}"],
            cwd=ROOT,
            env=product["env"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        move_end = time.monotonic()
        wait_for(
            lambda: failures or any(start > move_end for start, _ in served),
            timeout=120,
            what="a request started after the move",
        )
    finally:
        done.set()
        traffic.join(180)
    assert moved.returncode == 0, moved.stderr
    assert cluster.node_of(slug) == target, moved.stdout
    assert failures == []
    # Requests were in flight while the shards moved, and the organisation answers from its new worker.
    assert any(start < move_end and end > move_start for start, end in served), (move_start, move_end, served)
    search_and_chat(worlds[slug], slug)


# The product's provisioning with the commands the coordinator sends to the workers logged; the organisation is
# deleted again. Printed last, as JSON.
TRACED_PROVISIONING = f"""
import json
from django.conf import settings
from django.db import connection
from tenants.citus import reference_tables_ensure
from tenants.services import tenant_create, tenant_delete
connection.ensure_connection()
sent = []
connection.connection.add_notice_handler(lambda notice: sent.append(notice.message_primary))
with connection.cursor() as cursor:
    cursor.execute("SET citus.log_remote_commands = on")
tenant = tenant_create(name="citus-c", slug="citus-c", owner_email="admin@citus-c.test", owner_password={PASSWORD!r})
converted = reference_tables_ensure(settings.TENANT_BASE_SCHEMA)
tenant_delete(tenant=tenant)
print(json.dumps({{"sent": [m for m in sent if m.startswith("issuing ")], "converted": converted}}))
"""


def test_provisioning_asks_the_workers_nothing_that_grows_with_every_shard(product: dict):
    """Provisioning cost on Citus must not grow with the organisations already there: it reads no shard sizes (the
    citus_tables view asks every worker for the size of every shard) to find out which tables are reference tables."""
    traced = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", TRACED_PROVISIONING],
        cwd=ROOT,
        env=product["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert traced.returncode == 0, traced.stderr[-3000:]
    out = json.loads(traced.stdout.strip().splitlines()[-1])
    sent = out["sent"]
    assert any("worker_apply_shard_ddl_command" in command for command in sent)  # the clone's shards were created
    assert [command for command in sent if "pg_total_relation_size" in command] == []
    # Reference tables are recognised as such: the ones provisioning made are not converted again.
    assert out["converted"] == []
