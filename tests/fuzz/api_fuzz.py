"""Schemathesis over every operation of the live API contract, against a running server.

Each principal (an organisation admin with a JWT, or an API key holding every scope) has an organisation of its own,
so what one run destroys (its own key, its tokens, its membership, the organisation's settings) never reaches
another. When a call takes the principal's access away (401, 403, or a successful call of an operation that can
change who the principal is), its credentials are restored before the next case: the account, its admin
membership and its key are put back through the ORM and a fresh JWT or key is issued by the product's own services.
No operation is excluded.

Checks: no 5xx (`not_a_server_error`) and no contract violation (status code, content type, response body and
response headers as declared). 429 and 503 are declared by the operations that may shed, so with rate limits on they
are valid answers, not failures.

The server's processes, its database and the organisations are the caller's: `scripts/fuzz.py` (`make fuzz`) and
tests/fuzz/test_api_fuzz.py start them and call `fuzz_principal_create` and `fuzz_run`.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import schemathesis
from schemathesis.engine import events, from_schema

from config.processes import WEB, command

ROOT = Path(__file__).resolve().parents[2]

SCHEMA_PATH = "/api/v1/schema/"
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)
# Operations that may take the calling principal's access away even when they succeed: after one of them, the
# principal is restored (an admin again, its key unrevoked) before the next case.
PRINCIPAL_CHANGING = {
    ("DELETE", "/api/v1/api-keys/{key_id}/"),
    ("POST", "/api/v1/me/delete/"),
    ("POST", "/api/v1/me/tokens/revoke/"),
    ("DELETE", "/api/v1/me/sessions/{session_id}/"),
    ("POST", "/api/v1/auth/logout/"),
    ("PATCH", "/api/v1/members/{user_id}/"),
    ("DELETE", "/api/v1/members/{user_id}/"),
    ("PATCH", "/api/v1/iam/settings/"),
}
PrincipalKind = Literal["jwt", "api_key"]


@dataclass
class FuzzPrincipal:
    """One principal in an organisation of its own, with what it takes to restore it."""

    kind: PrincipalKind
    slug: str
    email: str
    password: str
    host: str  # Host header: the organisation's host on the server's port
    key_id: int | None = None
    authorization: str = ""
    restored: int = 0  # how many times its access was put back during a run
    stale: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def label(self) -> str:
        return "admin (JWT)" if self.kind == "jwt" else "API key"

    def header(self) -> str:
        with self.lock:
            if self.stale:
                self.authorization = _credentials_restore(self)
                self.restored += 1
                self.stale = False
            return self.authorization


def fuzz_principal_create(kind: PrincipalKind, *, port: int) -> FuzzPrincipal:
    """A new organisation whose admin (its owner) is the principal; committed, so the server sees it."""
    from django.conf import settings
    from django.db import connection

    from tenants.services import tenant_create

    slug = f"fuzz-{kind.replace('_', '')}-{secrets.token_hex(3)}"
    principal = FuzzPrincipal(
        kind=kind,
        slug=slug,
        email=f"admin@{slug}.test",
        password=secrets.token_urlsafe(18),
        host=f"{slug}.{settings.BASE_DOMAIN}:{port}",
    )
    tenant_create(name=f"Fuzz {kind}", slug=slug, owner_email=principal.email, owner_password=principal.password)
    connection.set_schema_to_public()
    principal.header()
    principal.restored = 0
    return principal


def fuzz_organisation_delete(principal: FuzzPrincipal) -> None:
    from django.db import connection

    from tenants.models import Tenant
    from tenants.services import tenant_delete

    tenant = Tenant.objects.filter(slug=principal.slug).first()
    if tenant is not None:
        tenant_delete(tenant=tenant)
    connection.set_schema_to_public()


def _credentials_restore(principal: FuzzPrincipal) -> str:
    """The principal back as its organisation's admin, with working credentials: "Bearer <jwt>" or "Api-Key <key>"."""
    from allauth.account.models import EmailAddress
    from django.db import connection
    from django_tenants.utils import tenant_context

    from accounts.models import Membership, Role, User
    from accounts.services import jwt_pair_issue
    from iam.models import ApiKey
    from iam.policy import principal_for_user
    from iam.services import api_key_create
    from tenants.models import Tenant

    connection.set_schema_to_public()
    tenant = Tenant.objects.get(slug=principal.slug)
    user = User.objects.filter(email=principal.email).first()
    if user is None:
        user = User.objects.create_user(email=principal.email, password=principal.password)
    if not user.is_active or not user.check_password(principal.password):
        user.is_active = True
        user.set_password(principal.password)
        user.save()
    EmailAddress.objects.update_or_create(
        user=user, email=principal.email, defaults={"verified": True, "primary": True}
    )
    Membership.objects.update_or_create(user=user, tenant=tenant, defaults={"role": Role.ADMIN})
    try:
        if principal.kind == "jwt":
            return (
                "Bearer " + jwt_pair_issue(tenant=tenant, email=principal.email, password=principal.password)["access"]
            )
        with tenant_context(tenant):
            if principal.key_id is not None and ApiKey.objects.filter(pk=principal.key_id, revoked_at=None).exists():
                return principal.authorization
            key, raw = api_key_create(
                principal=principal_for_user(user, tenant), name="fuzz", scopes=["read", "write", "chat", "admin"]
            )
            principal.key_id = key.pk
            return f"Api-Key {raw}"
    finally:
        connection.set_schema_to_public()


# --- the run ------------------------------------------------------------------------------------------------------


@dataclass
class Violation:
    check: str
    operation: str
    title: str
    message: str
    example: str = ""  # the request and the response that showed it


@dataclass
class FuzzReport:
    principal: str
    rate_limits: str  # "on" or "off"
    operations: int = 0  # operations in the schema
    tested: int = 0  # operations that got at least one request
    cases: int = 0  # requests sent
    server_errors: int = 0  # responses with a 5xx status
    statuses: Counter[int] = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the engine could not test something (schema, generation)
    restored: int = 0

    @property
    def violation_count(self) -> int:
        """Distinct contract violations (check, operation, kind); a 5xx is counted apart, in `server_errors`."""
        return len({(v.check, v.operation, v.title) for v in self.violations if v.check != "not_a_server_error"})

    def line(self) -> str:
        shed = self.statuses[429] + self.statuses[503]
        return (
            f"{self.principal:<12} rate limits {self.rate_limits:<3}  operations {self.tested}/{self.operations}  "
            f"cases {self.cases:>6}  5xx {self.server_errors}  violations {self.violation_count}  "
            f"engine errors {len(self.errors)}  shed {shed}  credentials restored {self.restored}"
        )

    def details(self, limit: int = 40) -> list[str]:
        seen: dict[tuple[str, str, str], Violation] = {}
        for violation in self.violations:
            seen.setdefault((violation.check, violation.operation, violation.title), violation)
        lines = [f"  {v.check} {v.operation}: {v.title}: {v.message[:300]}\n    {v.example}" for v in seen.values()]
        lines += [f"  engine error: {error[:300]}" for error in self.errors]
        return lines[:limit]


def fuzz_run(
    principal: FuzzPrincipal,
    *,
    base_url: str,
    rate_limits: str,
    max_examples: int,
    phases: tuple[str, ...] = ("examples", "coverage", "fuzzing"),
    seed: int | None = None,
    request_timeout: float = 60.0,  # the first search of a process loads the embedding model
) -> FuzzReport:
    """Every operation of the live schema, `max_examples` generated cases each (plus the coverage phase's
    boundary cases when it is on), as `principal`. Returns what was sent and what failed."""
    config_data: dict[str, Any] = {
        "base-url": base_url,
        "headers": {"Host": principal.host},
        "workers": 1,
        "request-timeout": request_timeout,
        "max-stream-events": 20,
        "generation": {"max-examples": max_examples, "database": "none", "mode": "all"},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        "phases": {name: {"enabled": name in phases} for name in ("examples", "coverage", "fuzzing", "stateful")},
    }
    if seed is not None:
        config_data["seed"] = seed
    config = schemathesis.Config.from_dict(config_data)
    schema = schemathesis.openapi.from_url(
        base_url + SCHEMA_PATH,
        config=config,
        headers={"Host": principal.host, "Authorization": principal.header()},
        timeout=30,
    )

    @schema.auth(refresh_interval=None)
    class PrincipalAuth:
        def get(self, case: Any, ctx: Any) -> str:
            return principal.header()

        def set(self, case: Any, data: str, ctx: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": data}

    @schema.hook
    def after_call(ctx: Any, case: Any, response: Any) -> None:
        sent = (case.headers or {}).get("Authorization")
        if sent != principal.authorization:
            return  # a case that tested without (or with broken) credentials says nothing about the principal's
        changing = (case.method.upper(), case.operation.path) in PRINCIPAL_CHANGING and response.status_code < 300
        if response.status_code in (401, 403) or changing:
            principal.stale = True

    report = FuzzReport(principal=principal.label, rate_limits=rate_limits, operations=len(schema))
    tested: set[str] = set()
    principal.restored = 0
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            _tally(event.recorder, report, tested)
        elif isinstance(event, events.NonFatalError):
            report.errors.append(f"{event.label}: {event.info.title}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            report.errors.append(f"fatal: {event.exception!r}")
    report.tested = len(tested)
    report.restored = principal.restored
    return report


def _tally(recorder: Any, report: FuzzReport, tested: set[str]) -> None:
    for case_id, interaction in recorder.interactions.items():
        if interaction.response is None:
            continue
        report.cases += 1
        status = interaction.response.status_code
        report.statuses[status] += 1
        if status >= 500:
            report.server_errors += 1
        node = recorder.cases.get(case_id)
        if node is not None:
            tested.add(node.value.operation.label)
    for case_id, checks in recorder.checks.items():
        for check in checks:
            if check.failure_info is None:
                continue
            failure = check.failure_info.failure
            interaction = recorder.interactions.get(case_id)
            example = ""
            if interaction is not None and interaction.response is not None:
                body = (interaction.response.content or b"")[:200]
                request = interaction.request
                sent = f"{request.headers.get('Content-Type', [''])[0]} {(request.body or b'')[:200]!r}"
                example = f"{request.method} {request.uri} {sent} -> {interaction.response.status_code} {body!r}"
            report.violations.append(
                Violation(check.name, failure.operation or recorder.label, failure.title, failure.message, example)
            )


# --- the server ---------------------------------------------------------------------------------------------------


def web_start(*, port: int, env: dict[str, str], log_path: Path, rate_limits: bool) -> subprocess.Popen:
    """The product's web process (daphne, config.processes.WEB) with rate limiting on or off (RATELIMIT_ENABLE),
    answering /healthz before this returns."""
    env = {**env, "RATELIMIT_ENABLE": "1" if rate_limits else "0"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(  # noqa: S603 - our interpreter, our command line
            [sys.executable, "-m", *command(WEB, port=str(port))], cwd=ROOT, env=env, stdout=log, stderr=log
        )
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne exited ({proc.returncode}); see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"Host": "localhost"}, timeout=2).is_success:
                return proc
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"daphne did not answer /healthz within 90 s; see {log_path}")
        time.sleep(0.25)


def processes_stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
