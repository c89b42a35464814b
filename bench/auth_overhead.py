"""Authentication cost per request.

1. GET /api/v1/me/ through the full middleware + DRF stack with each credential: browser session,
   tenant-bound JWT, API key (prefix lookup + HMAC + usage counter in Redis), against GET /healthz on the same
   host through the same middleware, interleaved request by request (so load on the machine hits all alike).
   p50/p95/p99 in ms and each credential's p50 / the /healthz p50 (goal <= 2), with the load average and the
   CPU time of the requesting thread (p50 and its ratio), which a loaded machine distorts less.
2. The raw cost of verifying an API key with our keyed HMAC-SHA256 vs argon2 (the password hasher),
   which is why keys use HMAC (see iam/keys.py).

    RATELIMIT_ENABLE=0 python scripts/devstack.py run bench/auth_overhead.py [N]
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from common import bench_django_setup, summary


def main() -> None:
    samples = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    bench_django_setup("agentry_bench_auth")
    from argon2 import PasswordHasher
    from django.test import Client
    from django_tenants.utils import tenant_context

    from accounts.models import Membership, Role, User
    from iam.keys import api_key_hash
    from iam.policy import principal_for_user
    from iam.services import api_key_create
    from tenants.models import Tenant
    from tenants.services import tenant_create

    password = "bench-horse-battery-9"
    user, created = User.objects.get_or_create(email="bench-auth@bench.test")
    if created:
        user.set_password(password)
        user.save()
    tenant = Tenant.objects.filter(slug="benchauth").first() or tenant_create(
        name="Bench auth", slug="benchauth", owner=user
    )
    Membership.objects.get_or_create(user=user, tenant=tenant, defaults={"role": Role.ADMIN})
    host = f"{tenant.slug}.localhost"
    with tenant_context(tenant):
        _, raw_key = api_key_create(principal=principal_for_user(user, tenant), name="bench", scopes=["read"])

    session = Client(HTTP_HOST=host)
    session.force_login(user)
    pair = Client(HTTP_HOST=host).post(
        "/api/v1/auth/token/", {"email": user.email, "password": password}, content_type="application/json"
    )
    assert pair.status_code == 200, pair.content
    clients = {
        "session": session,
        "JWT": Client(HTTP_HOST=host, HTTP_AUTHORIZATION=f"Bearer {pair.json()['access']}"),
        "API key": Client(HTTP_HOST=host, HTTP_AUTHORIZATION=f"Api-Key {raw_key}"),
    }

    probe = Client(HTTP_HOST=host)
    paths = {"/healthz": (probe, "/healthz"), **{name: (client, "/api/v1/me/") for name, client in clients.items()}}
    for client, path in paths.values():  # warm up
        for _ in range(30):
            client.get(path)
    times: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(samples):
        for name, (client, path) in paths.items():
            start, start_cpu = time.perf_counter(), time.thread_time()
            response = client.get(path)
            cpu[name].append((time.thread_time() - start_cpu) * 1000)
            times[name].append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200, response.content
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    print(f"GET /api/v1/me/ through the full stack vs GET /healthz, {samples} requests each, interleaved (ms):")
    base, base_cpu = summary(times["/healthz"])["p50"], statistics.median(cpu["/healthz"])
    for name, values in times.items():
        stats = summary(values)
        cpu_p50 = statistics.median(cpu[name])
        print(
            f"  {name:8s}  p50 {stats['p50']:6.2f}   p95 {stats['p95']:6.2f}   p99 {stats['p99']:6.2f}"
            f"   p50 / healthz p50 {stats['p50'] / base:5.2f}"
            f"   CPU p50 {cpu_p50:5.2f} ({cpu_p50 / base_cpu:4.2f}x)"
        )
    # Wall time counts every round trip to PostgreSQL or Redis as a wait for the CPU: on a loaded machine each one
    # costs a scheduling delay, so the CPU time of the request's own thread is shown beside it.

    hasher = PasswordHasher()
    stored = hasher.hash(raw_key)
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        api_key_hash(raw_key)
    hmac_us = (time.perf_counter() - start) / n * 1e6
    m = 20
    start = time.perf_counter()
    for _ in range(m):
        hasher.verify(stored, raw_key)
    argon_ms = (time.perf_counter() - start) / m * 1000
    print("API-key verification cost (hash only):")
    print(f"  HMAC-SHA256 + pepper : {hmac_us:8.2f} us")
    print(f"  argon2id (defaults)  : {argon_ms:8.2f} ms  ({argon_ms * 1000 / hmac_us:,.0f}x slower)")


if __name__ == "__main__":
    main()
