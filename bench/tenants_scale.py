"""Many organisations: provisioning, migrate_schemas and request latency with 1 vs N organisations (default 1,000).

    python scripts/devstack.py run bench/tenants_scale.py [--orgs 1000] [--samples 60] [--parallel 2]
    python scripts/devstack.py run bench/tenants_scale.py --citus [--citus-port 18600] [--citus-data DIR]   # on Citus

In a database of its own (dropped at the end), through the product's own code:
1. provisioning: N organisations created by tenants.services.tenant_create (the template cloned; on Citus the clone
   distributed over the workers), time per organisation (p50/p99/mean);
2. request latency (p50/p99), the same organisation measured with 1 and with N organisations in the database,
   interleaved path by path: search (POST .../knowledge-bases/{id}/search/), chat start (POST .../agents/{id}/chat/
   with wait=false, 202; the run is then executed in-process, outside the timing), the dashboard page (GET /);
3. migrate_schemas over the N organisations: with nothing to migrate (the product: schemas already current are
   skipped after one look at all of them, tenants.migrating; and django-tenants' plain per-schema run, timed on a
   sample and scaled to N), then with one new migration (bench.scale_app) serially and with the multiprocessing
   executor (--parallel processes).
--citus starts (or reuses) the cluster of scripts/citus.py (`make citus`): organisations spread over its workers.
Goals (the issue): provisioning < 1 s each, latency with N within 10 % of 1, nothing to migrate < 60 s for 1,000.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "agentry_tenants_scale"
HANDBOOK = [
    f"Section {i}: refunds are accepted within {10 + i} days; parcels leave the warehouse at {i % 12 + 1} o'clock."
    for i in range(40)
]


def _citus_script():
    spec = importlib.util.spec_from_file_location("citus_script", ROOT / "scripts" / "citus.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def database_create(args: argparse.Namespace) -> Callable[[], None]:
    """Point DATABASE_URL at the benchmark's own database; returns what drops it."""
    import psycopg

    if args.citus:
        citus = _citus_script()
        citus.start(data=args.citus_data or citus.DEFAULT_DATA, port=args.citus_port, workers=2, database="agentry")
        citus.database_drop(args.database, port=args.citus_port, workers=2)
        os.environ["DATABASE_URL"] = citus.database_ensure(args.database, port=args.citus_port, workers=2)
        os.environ["DATABASE_CITUS"] = "true"
        return lambda: citus.database_drop(args.database, port=args.citus_port, workers=2)
    url = urlparse(os.environ["DATABASE_URL"])
    admin_url = urlunparse(url._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.database}"')
    os.environ["DATABASE_URL"] = urlunparse(url._replace(path=f"/{args.database}"))

    def drop() -> None:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')

    return drop


def stats(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(values) * 1e3:8.1f} ms  p99 {p99 * 1e3:8.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orgs", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=60, help="requests per path and state")
    parser.add_argument("--parallel", type=int, default=2, help="processes of the parallel migrate_schemas")
    parser.add_argument("--sample-plain", type=int, default=20, help="schemas migrated by plain django-tenants")
    parser.add_argument("--database", default=DB_NAME, help="the benchmark's own database (dropped at the end)")
    parser.add_argument("--citus", action="store_true")
    parser.add_argument("--citus-port", type=int, default=int(os.environ.get("CITUS_PORT", "18600")))
    parser.add_argument("--citus-data", type=Path, help="the cluster's folder (default: scripts/citus.py's)")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings_tenants_scale"
    os.environ["TEST_DB_NAME"] = args.database  # the test settings' folders (static files, media): the bench's own
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RATE_LIMITS", '{"search": "1000000/m", "api": "1000000/m", "chat": "1000000/m"}')
    os.environ.setdefault("RATE_LIMITS_TENANT", '{"search": "1000000/m", "api": "1000000/m", "chat": "1000000/m"}')
    drop = database_create(args)
    try:
        return run(args)
    finally:
        from django.db import connections

        connections.close_all()
        drop()


def run(args: argparse.Namespace) -> int:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client, override_settings
    from django_tenants.management.commands.migrate_schemas import MigrateSchemasCommand
    from django_tenants.migration_executors import get_executor
    from django_tenants.utils import tenant_context

    from accounts.models import User
    from agents.runtime.runner import execute_run_async
    from agents.services import agent_create
    from iam.policy import Principal
    from knowledge.embeddings import embedder_for_model
    from knowledge.models import Chunk, Document, KnowledgeBase, KnowledgeBaseVersion
    from tenants.models import Tenant
    from tenants.services import tenant_create

    where = "Citus (coordinator + 2 workers)" if settings.DATABASE_CITUS else "single PostgreSQL"
    print(f"bench/tenants_scale.py on {where}, {args.orgs} organisations", flush=True)
    started = time.perf_counter()
    call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)
    call_command("platform_setup", verbosity=0)
    call_command("collectstatic", "--noinput", verbosity=0)  # the dashboard page names hashed static files
    print(f"  set-up (shared schema, template): {time.perf_counter() - started:.0f} s", flush=True)
    settings.AGENTS_ENQUEUE_RUNS = False  # runs are executed here, after the timed request that starts them
    owner = User.objects.create_user(email="owner@scale.test", password="Scale-bench-password-1")

    provisioning: list[float] = []

    def provision(i: int) -> Tenant:
        slug = f"scale-{i:05d}"
        t0 = time.perf_counter()
        tenant = tenant_create(name=slug, slug=slug, owner=owner)
        provisioning.append(time.perf_counter() - t0)
        return tenant

    tenant = provision(0)
    embedder = embedder_for_model("hashing-384")
    with tenant_context(tenant):
        kb = KnowledgeBase.objects.create(
            owner=owner, name="Handbook", current_version=1, embedding_model=embedder.name, embedding_dimension=384
        )
        KnowledgeBaseVersion.objects.create(knowledge_base=kb, number=1)
        doc = Document.objects.create(knowledge_base=kb, title="Handbook", source_type="text", status="ready")
        vectors = embedder.embed(HANDBOOK)
        Chunk.objects.bulk_create(
            Chunk(
                knowledge_base=kb,
                document=doc,
                position=i,
                text=text,
                content_hash=str(i),
                valid_from=1,
                embedding=vector,
                embedding_dimension=384,
            )
            for i, (text, vector) in enumerate(zip(HANDBOOK, vectors, strict=True))
        )
        principal = Principal(tenant=tenant, user=owner, role="admin")
        agent = agent_create(principal=principal, data={"name": "Helper", "knowledge_base_ids": [kb.pk]})
    connection.set_schema_to_public()
    client = Client(HTTP_HOST=f"{tenant.slug}.{settings.BASE_DOMAIN}")
    client.force_login(owner)

    def search() -> None:
        response = client.post(
            f"/api/v1/knowledge-bases/{kb.pk}/search/",
            {"query": "Within how many days are refunds accepted?", "top_k": 5},
            content_type="application/json",
        )
        assert response.status_code == 200 and response.json()["results"], response.content[:300]

    def chat_start() -> str:
        response = client.post(
            f"/api/v1/agents/{agent.pk}/chat/",
            {"message": "Within how many days are refunds accepted?", "wait": False},
            content_type="application/json",
        )
        assert response.status_code == 202, response.content[:300]
        return response.json()["run_id"]

    def dashboard() -> None:
        response = client.get("/")
        assert response.status_code == 200, response.status_code

    def latencies(samples: int) -> dict[str, list[float]]:
        times: dict[str, list[float]] = {"search": [], "chat start": [], "dashboard page": []}
        for _ in range(samples):
            for name, fn in (("search", search), ("chat start", chat_start), ("dashboard page", dashboard)):
                t0 = time.perf_counter()
                result = fn()
                times[name].append(time.perf_counter() - t0)
                if name == "chat start":
                    asyncio.run(execute_run_async(tenant.schema_name, str(result)))  # untimed: frees the run slot
        connection.set_schema_to_public()  # requests leave the connection in the organisation's schema
        return times

    latencies(10)  # warm-up: caches, embedder, connections
    with_one = latencies(args.samples)

    started = time.perf_counter()
    for i in range(1, args.orgs):
        provision(i)
        if i % 100 == 0:
            recent = statistics.median(provisioning[-100:]) * 1e3
            elapsed = time.perf_counter() - started
            print(f"  {i} organisations, {elapsed:.0f} s, last 100: p50 {recent:.0f} ms", flush=True)
    connection.set_schema_to_public()
    latencies(10)
    with_many = latencies(args.samples)

    schemas = list(Tenant.objects.exclude(schema_name="public").values_list("schema_name", flat=True))
    assert len(schemas) == args.orgs

    def timed_migrate(**options) -> float:
        t0 = time.perf_counter()
        call_command("migrate_schemas", tenant=True, interactive=False, verbosity=0, **options)
        connection.set_schema_to_public()
        return time.perf_counter() - t0

    nothing = timed_migrate(executor="standard")
    sample = schemas[: args.sample_plain]
    parser = MigrateSchemasCommand().create_parser("manage.py", "migrate_schemas")
    plain = get_executor("standard")([], vars(parser.parse_args(["--tenant", "--noinput", "-v", "0"])))
    t0 = time.perf_counter()
    plain.run_migrations(tenants=list(sample))  # django-tenants without the skip: one `migrate` per schema
    plain_per_schema = (time.perf_counter() - t0) / len(sample)
    connection.set_schema_to_public()
    with override_settings(MIGRATION_MODULES={"scale_app": "bench.scale_app.migrations_v2"}):
        serial = timed_migrate(executor="standard")
    with override_settings(
        MIGRATION_MODULES={"scale_app": "bench.scale_app.migrations_v3"},
        TENANT_MULTIPROCESSING_MAX_PROCESSES=args.parallel,
    ):
        parallel = timed_migrate(executor="multiprocessing")
    with connection.cursor() as cursor:  # every schema has both new migrations
        counts = []
        for schema in schemas:
            cursor.execute(f"SELECT count(*) FROM \"{schema}\".django_migrations WHERE app = 'scale_app'")
            counts.append(cursor.fetchone()[0])
        assert set(counts) == {3}, set(counts)

    print(f"\n== {where}: {args.orgs} organisations ==")
    print(
        f"provisioning per organisation: {stats(provisioning)}  mean {statistics.mean(provisioning) * 1e3:.1f} ms"
        f"  (goal < 1 s)"
    )
    tenth = max(1, len(provisioning) // 10)
    first, last = statistics.median(provisioning[:tenth]), statistics.median(provisioning[-tenth:])
    print(f"  first tenth p50 {first * 1e3:.1f} ms, last tenth p50 {last * 1e3:.1f} ms: ratio {last / first:.2f}")
    print(f"request latency, {args.samples} requests per path, 1 vs {args.orgs} organisations:")
    for name in with_one:
        one, many = with_one[name], with_many[name]
        ratio = statistics.median(many) / statistics.median(one)
        print(f"  {name:<15} 1: {stats(one)}   {args.orgs}: {stats(many)}   ratio p50 {ratio:.2f} (goal <= 1.10)")
    print(f"migrate_schemas over {args.orgs} organisations:")
    print(f"  nothing to migrate (product, skips current schemas): {nothing:8.1f} s  (goal < 60 s)")
    print(
        f"  nothing to migrate, plain django-tenants: {plain_per_schema * 1e3:.0f} ms per schema"
        f" (timed on {len(sample)}) = {plain_per_schema * args.orgs:.0f} s for {args.orgs}"
        f"  -> {plain_per_schema * args.orgs / nothing:.0f}x slower"
    )
    print(f"  one new migration, serial (standard executor):             {serial:8.1f} s")
    print(f"  one new migration, parallel (multiprocessing, {args.parallel} processes): {parallel:8.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
