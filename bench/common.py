"""Shared helpers for benchmarks: a dedicated, migrated database and simple statistics.

Benchmarks run through `python scripts/devstack.py run bench/<name>.py`, which starts (or reuses)
the embedded PostgreSQL and Redis and exports DATABASE_URL / REDIS_URL.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent


def bench_django_setup(db_name: str = "agentry_bench") -> None:
    """Point Django at a separate database (created if missing), migrate it, and set up the platform."""
    import psycopg

    sys.path.insert(0, str(ROOT))
    url = urlparse(os.environ["DATABASE_URL"])
    admin_url = urlunparse(url._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db_name]).fetchone():
            conn.execute(f'CREATE DATABASE "{db_name}"')
    os.environ["DATABASE_URL"] = urlunparse(url._replace(path=f"/{db_name}"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)
    call_command("platform_setup", verbosity=0)
    call_command("migrate_schemas", tenant=True, interactive=False, verbosity=0)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(values), "p95": percentile(values, 95), "p99": percentile(values, 99)}
