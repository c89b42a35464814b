"""Tenant provisioning and resolution benchmark.

1. Time to create one tenant: cloning the template schema vs running every migration (median of N).
2. Time per request: a tenant-host request (host -> tenant lookup + SET search_path) vs the same view
   on the public host, through the full Django middleware stack.

    python scripts/devstack.py run bench/tenant_provisioning.py [N]
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid

from common import bench_django_setup, summary


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    bench_django_setup()
    from django.test import Client, override_settings

    from accounts.models import User
    from tenants.services import tenant_create, tenant_delete

    owner, _ = User.objects.get_or_create(email="bench-owner@bench.test")
    created = []

    def provision(clone: bool) -> float:
        slug = f"bench-{'c' if clone else 'm'}-{uuid.uuid4().hex[:8]}"
        with override_settings(TENANT_CREATION_FAKES_MIGRATIONS=clone):
            start = time.perf_counter()
            tenant = tenant_create(name=slug, slug=slug, owner=owner)
            elapsed = time.perf_counter() - start
        created.append(tenant)
        return elapsed

    try:
        provision(True)  # warm caches (migration loader, clone function)
        clone_times = [provision(True) for _ in range(runs)]
        migrate_times = [provision(False) for _ in range(runs)]
        clone_med, migrate_med = statistics.median(clone_times), statistics.median(migrate_times)
        from tenants.services import _all_migrations

        print(f"tenant provisioning, median of {runs} ({len(_all_migrations())} migrations in the project):")
        print(f"  clone template schema : {clone_med * 1000:8.1f} ms")
        print(f"  run all migrations    : {migrate_med * 1000:8.1f} ms")
        print(f"  ratio migrate / clone : {migrate_med / clone_med:8.2f}x faster with cloning")

        tenant = created[0]
        tenant_client = Client(HTTP_HOST=f"{tenant.slug}.localhost")
        public_client = Client(HTTP_HOST="localhost")
        samples = 500
        for client in (tenant_client, public_client):  # warm up
            for _ in range(50):
                client.get("/healthz")

        def timed(client: Client) -> list[float]:
            out = []
            for _ in range(samples):
                start = time.perf_counter()
                response = client.get("/healthz")
                out.append(time.perf_counter() - start)
                assert response.status_code == 200
            return out

        tenant_stats, public_stats = summary(timed(tenant_client)), summary(timed(public_client))
        print(f"request through the middleware stack, {samples} requests each (GET /healthz):")
        for label, stats in (("tenant host", tenant_stats), ("public host", public_stats)):
            print(f"  {label:12}: p50 {stats['p50'] * 1e3:6.3f} ms  p95 {stats['p95'] * 1e3:6.3f} ms")
        print(f"  ratio tenant / public p50: {tenant_stats['p50'] / public_stats['p50']:.2f}")
    finally:
        for tenant in created:
            tenant_delete(tenant=tenant)


if __name__ == "__main__":
    main()
