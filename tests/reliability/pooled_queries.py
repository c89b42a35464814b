"""Interleaved queries of several organisations through one Django process, as the product's settings make them.

Run by tests/reliability/test_database_scale_out.py with DATABASE_URL pointing at PgBouncer in transaction pooling
mode: `python -m tests.reliability.pooled_queries '<json>'`, where the JSON lists the organisations (schema, admin
user id, the names of their knowledge bases). Threads act for the organisations in turn, each with its own Django
connection, and every query checks that it ran in its own organisation's schema, as its own principal, and saw
only its own rows. Prints a JSON report: the mismatches (empty when nothing leaked), the number of queries, and the
PgBouncer server sessions each thread's queries ran on.
"""

from __future__ import annotations

import json
import sys
import threading

import django

THREADS = 8
ROUNDS = 150  # x 4 queries x 8 threads: ~5,000 queries


def main(orgs: list[dict]) -> dict:
    django.setup()
    from django.conf import settings
    from django.db import connection, transaction

    from core.rls import db_principal_for, db_principal_scope
    from core.tenancy import in_tenant
    from knowledge.models import KnowledgeBase

    mismatches: list[str] = []
    sessions: list[set[int]] = [set() for _ in range(THREADS)]
    queries = [0] * THREADS

    def check(thread: int, org: dict, what: str, got: object, expected: object) -> None:
        queries[thread] += 1
        if got != expected:
            mismatches.append(f"thread {thread} ({org['schema']}) {what}: got {got!r}, expected {expected!r}")

    def state(cursor) -> tuple[str, str, str, int]:
        cursor.execute("SELECT current_schema(), current_setting('agentry.principal', true), current_user, %s", [0])
        schema, principal, user, _ = cursor.fetchone()
        cursor.execute("SELECT pg_backend_pid()")
        return schema, principal, user, cursor.fetchone()[0]

    def work(thread: int) -> None:
        org = orgs[thread % len(orgs)]
        principal = db_principal_for(user_id=org["user_id"], is_admin=True, schema=org["schema"])
        names = sorted(org["kb_names"])
        try:
            with in_tenant(org["schema"]), db_principal_scope(principal):
                for _ in range(ROUNDS):
                    # Autocommit: every statement is a transaction of its own, anywhere in the pool.
                    got = sorted(KnowledgeBase.objects.values_list("name", flat=True))
                    check(thread, org, "knowledge bases", got, names)
                    with connection.cursor() as cursor:
                        schema, seen_principal, user, pid = state(cursor)
                    sessions[thread].add(pid)
                    expected = (org["schema"], principal, settings.DB_APP_ROLE)
                    check(thread, org, "schema / principal / role", (schema, seen_principal, user), expected)
                    # A transaction: one server session from BEGIN to COMMIT.
                    with transaction.atomic(), connection.cursor() as cursor:
                        check(thread, org, "count", KnowledgeBase.objects.count(), len(names))
                        schema, seen_principal, user, pid = state(cursor)
                        check(thread, org, "schema in a transaction", schema, org["schema"])
                        check(thread, org, "role in a transaction", user, settings.DB_APP_ROLE)
        except Exception as exc:  # noqa: BLE001 - a query that failed is a finding, reported with the others
            mismatches.append(f"thread {thread} ({org['schema']}) failed: {exc!r}")
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "mismatches": mismatches[:20],
        "mismatch_count": len(mismatches),
        "queries": sum(queries),
        "sessions_per_thread": [len(pids) for pids in sessions],
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
