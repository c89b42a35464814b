"""PostgreSQL restarts while clients call the API: while it is down every request gets 503 with the one error body
(code `database_unavailable`, Retry-After), never a 500 page nor a hang; once it is back the same web process
answers again, without a restart. The database is a private cluster holding a copy of the session's test
database, so restarting it disturbs nothing else."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from tests.reliability.services import (
    api,
    private_postgres,
    private_redis,
    product_env,
    product_processes,
    session_database_url,
    wait_for,
)

pytestmark = [pytest.mark.reliability, pytest.mark.e2e, pytest.mark.django_db]


DOWN_SECONDS = 8  # a few pool timeouts long: requests start and end while it is down
# The web process's pool waits DB_POOL_TIMEOUT (3 s by default) for a connection, then answers 503: with the
# request's own work, every request ends within this bound, the database up or down.
LONGEST_REQUEST_SECONDS = 5


@dataclass
class Call:
    started: float
    ended: float
    status: int
    body: dict
    retry_after: str | None


def test_postgres_restart_under_traffic_gives_503_json_then_recovers_without_a_restart(org, tmp_path):
    with (
        private_redis(tmp_path) as redis_server,
        private_postgres(tmp_path, copy_of=session_database_url()) as postgres,
        product_processes("pg-restart", product_env(redis_url=redis_server.url, database_url=postgres.url)) as procs,
    ):
        web, port = procs.web()
        calls: list[Call] = []
        stop = threading.Event()

        def traffic() -> None:
            with api(port, org.slug, org.key, timeout=20) as http:
                while not stop.is_set():
                    started = time.monotonic()
                    response = http.get("/api/v1/agents/")
                    try:
                        body = response.json()
                    except ValueError:
                        body = {}
                    calls.append(
                        Call(started, time.monotonic(), response.status_code, body, response.headers.get("Retry-After"))
                    )
                    time.sleep(0.05)

        clients = [threading.Thread(target=traffic, daemon=True) for _ in range(3)]
        for client in clients:
            client.start()
        try:
            wait_for(lambda: any(c.status == 200 for c in calls), timeout=30, what="the first answer (warm-up)")
            time.sleep(1)
            stopping_at = time.monotonic()  # requests ending between this and down_at met a server shutting down
            postgres.stop("fast")  # what a restart does to open sessions; returns once the server is gone
            down_at = time.monotonic()
            time.sleep(DOWN_SECONDS)
            up_at = time.monotonic()
            postgres.start()
            back_at = wait_for(
                lambda: next((c.ended for c in calls if c.started > up_at and c.status == 200), None),
                timeout=20,
                what="an answer after the restart",
            )
            time.sleep(2)
        finally:
            stop.set()
            for client in clients:
                client.join(LONGEST_REQUEST_SECONDS * 2)
        assert not any(client.is_alive() for client in clients), "a request hung"
        assert web.proc.poll() is None, "the web process died"

    statuses = [c.status for c in calls]
    before = [c for c in calls if c.ended < stopping_at]
    during = [c for c in calls if down_at < c.started and c.ended < up_at]
    after = [c for c in calls if c.started > back_at]
    assert set(statuses) <= {200, 503}, f"other statuses than 200 and 503: {statuses}"
    assert before and all(c.status == 200 for c in before), statuses
    timeline = [(round(c.started - down_at, 2), round(c.ended - down_at, 2), c.status) for c in calls]
    assert during and all(c.status == 503 for c in during), f"not 503 while the database was down: {timeline}"
    for call in calls:
        if call.status == 503:
            assert call.body.get("code") == "database_unavailable" and call.body.get("detail"), call.body
            assert call.retry_after and int(call.retry_after) > 0
    longest = max(c.ended - c.started for c in calls)
    assert longest < LONGEST_REQUEST_SECONDS, f"a request took {longest:.1f} s"
    assert len(after) >= 5 and all(c.status == 200 for c in after), f"not recovered after the restart: {statuses}"
    print(
        f"{len(calls)} requests, {statuses.count(503)} got 503, longest {longest:.2f} s; "
        f"first 200 {back_at - up_at:.2f} s after PostgreSQL was started"
    )
