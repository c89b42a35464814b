"""The fuzzer on a bounded budget, in CI: every operation of the live schema, against real daphne processes and the
product's Celery workers, finds no 5xx and no contract violation. `make fuzz` runs the same with a larger budget.

Both principals and both rate-limit modes are covered, each principal in a new organisation of its own: the admin
with a JWT against the web process with rate limiting on (429 is a declared answer there), the API key against one
with it off (every case reaches the view). Rejected cases may still be 4xx: only 5xx and answers the contract does
not declare fail.
"""

from __future__ import annotations

import subprocess

import httpx
import pytest

from conftest import ROOT, subprocess_env
from tests.browser.conftest import free_port

from .api_fuzz import FuzzReport, fuzz_organisation_delete, fuzz_principal_create, fuzz_run, processes_stop, web_start

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = 2  # generated cases per operation; the examples phase adds the declared examples
SEED = 14  # the same cases every run: a failure here reproduces


@pytest.fixture(scope="module")
def web_processes(celery_worker_process, django_db_blocker):
    """Two web processes on the test database: rate limiting on, and off. Yields {mode: port}."""
    with django_db_blocker.unblock():
        env = subprocess_env()
    env["LOG_LEVEL"] = "WARNING"
    logs = ROOT / "var"
    ports = {"on": free_port(), "off": free_port()}
    procs: list[subprocess.Popen] = []
    try:
        for mode, port in ports.items():
            log_path = logs / f"fuzz-web-{mode}-{env['DATABASE_URL'].rsplit('/', 1)[-1]}.log"
            procs.append(web_start(port=port, env=env, log_path=log_path, rate_limits=mode == "on"))
        yield ports
    finally:
        processes_stop(procs)


def test_fuzzing_every_operation_finds_no_server_error_and_no_contract_violation(web_processes, django_db_blocker):
    runs = [("jwt", "on"), ("api_key", "off")]
    reports: list[FuzzReport] = []
    with django_db_blocker.unblock():
        for kind, mode in runs:
            port = web_processes[mode]
            principal = fuzz_principal_create(kind, port=port)
            try:
                reports.append(
                    fuzz_run(
                        principal,
                        base_url=f"http://127.0.0.1:{port}",
                        rate_limits=mode,
                        max_examples=MAX_EXAMPLES,
                        phases=("examples", "fuzzing"),
                        seed=SEED,
                    )
                )
            finally:
                fuzz_organisation_delete(principal)
    summary = "\n".join(line for report in reports for line in [report.line(), *report.details()])
    for report in reports:
        assert report.operations > 80, summary
        assert report.tested == report.operations, summary
        assert report.cases >= report.operations, summary
        assert not report.errors, summary
        assert report.server_errors == 0, summary
        assert report.violation_count == 0, summary
    print(summary)


def test_a_malformed_multipart_body_gets_the_json_error_body(web_processes, django_db_blocker):
    """Twisted used to parse multipart bodies before daphne and refuse a malformed one with a bare 400: no headers,
    no body (config/asgi.py). The body is now the application's to parse."""
    with django_db_blocker.unblock():
        principal = fuzz_principal_create("api_key", port=web_processes["off"])
    try:
        boundary = "b1e95c0a0e6ba9b2"
        response = httpx.post(
            f"http://127.0.0.1:{web_processes['off']}/api/v1/llm-providers/",
            content=f"--{boundary}--\r\n".encode(),
            headers={
                "Host": principal.host,
                "Authorization": principal.authorization,
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
            timeout=30,
        )
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/json"
        assert response.json()["code"] == "invalid"
    finally:
        with django_db_blocker.unblock():
            fuzz_organisation_delete(principal)
