"""The isolation matrix: every route of every surface (REST API, dashboard pages, WebSockets), generated from the URL
confs and declared in tests/isolation_routes.py, called with real ids of another member's private objects by

- strangers: anonymous, and the other organisation's admin with a JWT, an API key and a session;
- members without access: a plain member and a read-only member (JWT on the API, session on the dashboard and
  sockets), an admin's API key lacking the scope the call needs, and an admin's key limited to another agent.

Every victim object carries a marker ("marker-7f3a-..." in its name, title or content). A probe fails if its status
is not a refusal (401/403/404, a login redirect for anonymous pages, a refused handshake) where one is due, or if a
marker the actor may not see appears in the body at all (lists must be filtered, event feeds must stay silent).
Each surface is one test that collects every failure into one message (route, actor, status, leaked marker).

Victim data is committed once per module (WebSocket consumers read it from their own threads) and deleted after;
each HTTP probe runs in a savepoint that is rolled back, so a leak that writes cannot disturb the next probe.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from allauth.usersessions.models import UserSession
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.messages import constants as message_levels
from django.contrib.messages import get_messages
from django.contrib.sessions.models import Session
from django.db import connection, transaction
from django.test import Client, override_settings
from django.utils import timezone
from django_tenants.utils import tenant_context
from rest_framework.views import APIView

from accounts.models import Role, User
from accounts.tests.helpers import api_key_create, jwt_pair, member_create, reset_counters
from agents.models import Agent, ApprovedHost, Conversation, CustomTool, ProviderCredential
from agents.services import agent_create, chat_start
from agents.tests.conftest import run_inline
from config.asgi import application
from conftest import PASSWORD, host_of
from core.crypto import encrypt_str
from iam.models import ApiKey, Invitation, Share, Team, TeamMembership
from iam.policy import ALL_SCOPES, PUBLIC_SCOPE, principal_for_user, required_scope_for
from knowledge.embeddings import embedder_for_model
from knowledge.models import Chunk, Document, KnowledgeBase, KnowledgeBaseVersion
from tenants.models import Tenant
from tenants.services import tenant_create, tenant_delete
from usage.models import QuotaSubLimit, UsageRecord
from webhooks.models import WebhookDelivery, WebhookEndpoint

from .isolation_routes import (
    ACCOUNT,
    ADMIN,
    AGENT_KINDS,
    API_ROUTES,
    DASHBOARD_ROUTES,
    OWN,
    PRIVATE,
    PUBLIC,
    WS_ROUTES,
    Call,
    Route,
    discover,
    discover_websockets,
    fill,
)

pytestmark = pytest.mark.django_db

MARKER = "marker-7f3a"
# What each kind of actor must never read: strangers nothing of the victim organisation (even what every member of
# it may read: "-org-" markers); members nothing private; an agent-limited key nothing about the victim agent.
STRANGER_SEES_NOTHING = re.compile(MARKER, re.I)
MEMBER_SEES_NO_PRIVATE = re.compile(MARKER + r"-(?!org-)", re.I)
LIMITED_KEY_SEES_NO_AGENT = re.compile(MARKER + r"-(agent|conversation|message)", re.I)
REFUSED = frozenset({401, 403, 404})


@dataclass
class Actor:
    name: str
    client: Client | None = None
    ws_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    ws_query: str = ""
    stranger: bool = False
    readonly: bool = False
    lacks: str | None = None  # an admin's API key without this scope
    agent_limited: bool = False
    user: Any = None
    refresh: str = ""

    @property
    def forbidden(self) -> re.Pattern:
        if self.stranger:
            return STRANGER_SEES_NOTHING
        return LIMITED_KEY_SEES_NO_AGENT if self.agent_limited else MEMBER_SEES_NO_PRIVATE


@dataclass
class VictimWorld:
    tenant: Any
    other: Any
    ids: dict[str, Any]  # object kind -> id of the victim object
    api_actors: list[Actor]
    dashboard_actors: list[Actor]
    keys_lacking: dict[str, Actor]  # scope -> an admin's key without it
    ws_actors: list[Actor]
    owner: Any
    owner_session_cookie: str


# --- Victim world ---------------------------------------------------------------------------------------------


def _client(tenant, **headers) -> Client:
    return Client(HTTP_HOST=host_of(tenant), raise_request_exception=False, **headers)


def _session_key(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def _session_client(tenant, session_key: str) -> Client:
    client = _client(tenant)
    client.cookies[settings.SESSION_COOKIE_NAME] = session_key
    return client


def _build_world(tenant_a, tenant_b, admin_a, admin_b, made: dict) -> VictimWorld:
    uid = uuid.uuid4().hex[:8]
    owner = member_create(tenant_a, role=Role.USER, email=f"{MARKER}-org-owner-{uid}@acme.test")
    member = member_create(tenant_a, role=Role.USER, email=f"matrix-member-{uid}@acme.test")
    reader = member_create(tenant_a, role=Role.READONLY, email=f"matrix-reader-{uid}@acme.test")
    made["users"] = [owner.pk, member.pk, reader.pk]
    ids: dict[str, Any] = {"owner": owner.pk}
    with tenant_context(tenant_a):
        as_owner = principal_for_user(owner, tenant_a)
        agent = agent_create(
            principal=as_owner, data={"name": f"{MARKER}-agent", "system_prompt": f"{MARKER}-agent prompt"}
        )
        assert agent.org_access == "none"
        decoy = agent_create(principal=principal_for_user(admin_a, tenant_a), data={"name": "matrix decoy"})
        made["agents"] = [agent.pk, decoy.pk]
        ids.update(agent=agent.pk, agent_version=agent.current_version.number)
        embedder = embedder_for_model("hashing-384")  # offline and fast
        kb = KnowledgeBase.objects.create(
            owner=owner,
            name=f"{MARKER}-kb",
            description=f"{MARKER}-kb description",
            current_version=1,
            embedding_model=embedder.name,
            embedding_dimension=embedder.dimension,
        )
        made["kb"] = kb.pk
        KnowledgeBaseVersion.objects.create(knowledge_base=kb, number=1, note=f"{MARKER}-kbversion")
        document = Document.objects.create(
            knowledge_base=kb, title=f"{MARKER}-document", source_type="text", status="ready", uploaded_by=owner
        )
        text = f"{MARKER}-chunk handbook text"
        Chunk.objects.create(
            knowledge_base=kb,
            document=document,
            position=0,
            text=text,
            content_hash="matrix",
            valid_from=1,
            embedding=embedder.embed([text])[0],
            embedding_dimension=embedder.dimension,
        )
        ids.update(kb=kb.pk, kb_version=1, document=document.pk)
        handles = chat_start(principal=as_owner, agent=agent, message=f"{MARKER}-message hello")
        run_inline(tenant_a, handles["run_id"])
        Conversation.objects.filter(pk=handles["conversation_id"]).update(title=f"{MARKER}-conversation")
        ids.update(run=handles["run_id"], conversation=handles["conversation_id"])
        team = Team.objects.create(name=f"{MARKER}-org-team-{uid}")
        made["team"] = team.pk
        TeamMembership.objects.create(team=team, user=owner)
        share = Share.objects.create(
            team=team, resource_type="agent", resource_id=agent.pk, level="viewer", created_by=owner
        )
        ids.update(team=team.pk, share=share.pk)
        key, _ = api_key_create(tenant_a, owner, scopes=["read"])
        ApiKey.objects.filter(pk=key.pk).update(name=f"{MARKER}-apikey")
        ids["api_key"] = key.pk
        endpoint = WebhookEndpoint.objects.create(
            url=f"https://hooks.example.test/{MARKER}-webhook",
            description=f"{MARKER}-webhook",
            event_types=["*"],
            secret_encrypted=encrypt_str(f"{MARKER}-webhook-secret"),
            is_active=False,  # no delivery is ever attempted for the events this test causes
            created_by=admin_a,
        )
        made["webhook"] = endpoint.pk
        delivery = WebhookDelivery.objects.create(
            endpoint=endpoint, event_id=f"matrix-{uid}", event_type="agent.created", payload={"name": f"{MARKER}-x"}
        )
        invitation = Invitation.objects.create(
            email=f"{MARKER}-invitation-{uid}@example.test",
            nonce=uid,
            invited_by=admin_a,
            expires_at=timezone.now() + timedelta(days=1),
        )
        provider = ProviderCredential.objects.create(name=f"{MARKER}-org-provider-{uid}", kind="offline")
        tool = CustomTool.objects.create(name=f"{MARKER}-org-tool-{uid}", description=f"{MARKER}-org-tool")
        host = ApprovedHost.objects.create(host=f"{MARKER}-org-host-{uid}.example.test")
        sublimit = QuotaSubLimit.objects.create(quota="tokens_month", user=owner, limit=5)
        UsageRecord.objects.create(run_id=handles["run_id"], agent_id=agent.pk, user_id=owner.pk, model=f"{MARKER}-u")
        made.update(invitation=invitation.pk, provider=provider.pk, tool=tool.pk, host=host.pk, sublimit=sublimit.pk)
        ids.update(
            webhook=endpoint.pk,
            delivery=delivery.pk,
            invitation=invitation.pk,
            provider=provider.pk,
            custom_tool=tool.pk,
            approved_host=host.pk,
            sublimit=sublimit.pk,
        )
    owner_session = _session_key(owner)
    session = UserSession.objects.create(
        user=owner, session_key=owner_session, ip="127.0.0.1", user_agent=f"{MARKER}-session browser"
    )
    ids["session"] = session.pk

    reset_counters()  # logins below are throttled like any other
    b_pair = jwt_pair(tenant_b, admin_b)
    b_key, b_raw = api_key_create(tenant_b, admin_b)
    made["b_keys"] = [b_key.pk]
    b_session = _session_key(admin_b)
    m_pair, r_pair = jwt_pair(tenant_a, member), jwt_pair(tenant_a, reader)
    m_session, r_session = _session_key(member), _session_key(reader)
    made["sessions"] = [owner_session, b_session, m_session, r_session]

    def bearer(access: str) -> dict:
        return {"HTTP_AUTHORIZATION": f"Bearer {access}"}

    strangers = [
        Actor("anonymous", _client(tenant_a), stranger=True),
        Actor(
            "other organisation's admin JWT", _client(tenant_a, **bearer(b_pair["access"])), stranger=True, user=admin_b
        ),
        Actor(
            "other organisation's admin API key",
            _client(tenant_a, HTTP_AUTHORIZATION=f"Api-Key {b_raw}"),
            stranger=True,
            user=admin_b,
        ),
        Actor("other organisation's admin session", _session_client(tenant_a, b_session), stranger=True, user=admin_b),
    ]
    for actor in strangers[1:]:
        actor.refresh = b_pair["refresh"]
    member_jwt = Actor(
        "member JWT", _client(tenant_a, **bearer(m_pair["access"])), user=member, refresh=m_pair["refresh"]
    )
    reader_jwt = Actor(
        "read-only member JWT",
        _client(tenant_a, **bearer(r_pair["access"])),
        readonly=True,
        user=reader,
        refresh=r_pair["refresh"],
    )
    keys_lacking = {}
    for scope in sorted(ALL_SCOPES):
        key, raw = api_key_create(tenant_a, admin_a, scopes=sorted(ALL_SCOPES - {scope, "admin"}))
        made.setdefault("a_keys", []).append(key.pk)
        keys_lacking[scope] = Actor(
            f"admin API key without {scope!r}",
            _client(tenant_a, HTTP_AUTHORIZATION=f"Api-Key {raw}"),
            lacks=scope,
            user=admin_a,
            ws_headers=[(b"authorization", f"Api-Key {raw}".encode())],
        )
    key, limited_raw = api_key_create(tenant_a, admin_a, scopes=["read", "write", "chat"], agent_ids=[decoy.pk])
    made["a_keys"].append(key.pk)
    limited = Actor(
        "admin API key limited to another agent",
        _client(tenant_a, HTTP_AUTHORIZATION=f"Api-Key {limited_raw}"),
        agent_limited=True,
        user=admin_a,
        ws_headers=[(b"authorization", f"Api-Key {limited_raw}".encode())],
    )
    dashboard_actors = [
        strangers[0],
        strangers[3],
        Actor("member session", _session_client(tenant_a, m_session), user=member),
        Actor("read-only member session", _session_client(tenant_a, r_session), readonly=True, user=reader),
    ]
    ws_actors = [
        Actor("anonymous", stranger=True),
        Actor("other organisation's admin JWT", stranger=True, ws_query=f"token={b_pair['access']}"),
        Actor(
            "other organisation's admin API key",
            stranger=True,
            ws_headers=[(b"authorization", f"Api-Key {b_raw}".encode())],
        ),
        Actor("other organisation's admin session", stranger=True, ws_headers=[(b"cookie", _cookie(b_session))]),
        Actor(
            "victim's own session from the other organisation's page (foreign Origin)",
            stranger=True,
            ws_headers=[(b"cookie", _cookie(owner_session)), (b"origin", f"http://{host_of(tenant_b)}".encode())],
        ),
        Actor("member JWT", ws_query=f"token={m_pair['access']}", user=member),
        Actor(
            "read-only member JWT",
            readonly=True,
            ws_headers=[(b"authorization", f"Bearer {r_pair['access']}".encode())],
        ),
        Actor("member session", ws_headers=[(b"cookie", _cookie(m_session))], user=member),
        limited,
    ]
    return VictimWorld(
        tenant=tenant_a,
        other=tenant_b,
        ids=ids,
        api_actors=[*strangers, member_jwt, reader_jwt, limited],
        dashboard_actors=dashboard_actors,
        keys_lacking=keys_lacking,
        ws_actors=ws_actors,
        owner=owner,
        owner_session_cookie=owner_session,
    )


def _cookie(session_key: str) -> bytes:
    return f"{settings.SESSION_COOKIE_NAME}={session_key}".encode()


def _clean_world(tenant_a, tenant_b, admins: list[int], made: dict) -> None:
    connection.set_schema_to_public()
    for tenant in (tenant_a, tenant_b):
        tenant_delete(tenant=tenant)
    # Django's cascade also visits per-tenant tables (team memberships, API keys): run it in a schema that has them,
    # where these users have no rows.
    with tenant_context(Tenant.objects.get(slug="acme")):
        User.objects.filter(pk__in=[*admins, *made.get("users", [])]).delete()
    connection.set_schema_to_public()
    Session.objects.filter(session_key__in=made.get("sessions", [])).delete()


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    """Two organisations of the matrix's own, dropped afterwards with everything in them: the victim data is
    committed (consumers read it from their own threads) and the audit log it writes cannot be deleted."""
    made: dict = {}
    with django_db_blocker.unblock(), override_settings(AGENTS_ENQUEUE_RUNS=False):
        admin_a = User.objects.create_user(email="admin@matrix-victim.test", password=PASSWORD)
        admin_b = User.objects.create_user(email="admin@matrix-stranger.test", password=PASSWORD)
        tenant_a = tenant_create(name="Matrix victim", slug="matrix-victim", owner=admin_a)
        tenant_b = tenant_create(name="Matrix stranger", slug="matrix-stranger", owner=admin_b)
        try:
            yield _build_world(tenant_a, tenant_b, admin_a, admin_b, made)
        finally:
            _clean_world(tenant_a, tenant_b, [admin_a.pk, admin_b.pk], made)


# --- Classification ---------------------------------------------------------------------------------------------


def _table_for(route: str) -> dict[str, Route]:
    return API_ROUTES if route.startswith("api/v1/") else DASHBOARD_ROUTES


def test_every_route_is_classified():
    """Every HTTP and WebSocket route is in the table, with an object kind for each URL kwarg and, for API views,
    exactly the methods the view implements, each with a declared scope."""
    problems = []
    http = discover("config.urls")
    for found in http:
        entry = _table_for(found.route).get(found.route)
        if entry is None:
            problems.append(f"{found.route} ({found.view}): not in tests/isolation_routes.py")
            continue
        if set(entry.kinds) != set(found.kwargs):
            problems.append(f"{found.route}: kwargs {sorted(found.kwargs)} declared as {sorted(entry.kinds)}")
        if found.route.startswith("api/v1/"):
            if not (isinstance(found.view, type) and issubclass(found.view, APIView)):
                problems.append(f"{found.route}: API routes must be DRF views (so auth and scopes apply)")
                continue
            declared = {call.method for call in entry.calls}
            if declared != found.methods:
                problems.append(f"{found.route}: view implements {sorted(found.methods)}, table {sorted(declared)}")
            for method in found.methods:
                scope = required_scope_for(found.view, method)
                if scope not in ALL_SCOPES and scope != PUBLIC_SCOPE:
                    problems.append(f"{found.route} {method}: required_scope is {scope!r}")
    routes = {found.route for found in http}
    problems += [f"{route}: in the table but not routed" for route in {*API_ROUTES, *DASHBOARD_ROUTES} - routes]
    sockets = discover_websockets()
    for found in sockets:
        entry = WS_ROUTES.get(found.route)
        if entry is None:
            problems.append(f"WebSocket {found.route}: not in tests/isolation_routes.py")
        elif set(entry.kinds) != set(found.kwargs):
            problems.append(f"WebSocket {found.route}: kwargs {sorted(found.kwargs)} declared {sorted(entry.kinds)}")
    problems += [f"WebSocket {r}: in the table but not routed" for r in set(WS_ROUTES) - {f.route for f in sockets}]
    assert not problems, "Unclassified routes:\n" + "\n".join(problems)


# --- Probing ------------------------------------------------------------------------------------------------------


def _must_refuse(actor: Actor, route: Route, call: Call, scope: str | None, self_service: bool) -> bool | None:
    """True: the actor must be refused; False: it may be answered (without markers); None: not probed."""
    if call.expect in (PUBLIC, ACCOUNT):
        return False
    if actor.stranger:
        return True
    if call.expect == OWN:
        return None  # acting on one's own account (log out, delete it) is the point; strangers probe it
    if actor.lacks is not None:
        return True  # only used where the call needs the scope it lacks
    if actor.agent_limited:
        if AGENT_KINDS & ({*route.kinds.values()} | call.refs()):
            return True
        return False if call.about_agents else None
    if call.expect in (PRIVATE, ADMIN) or scope == "admin":
        return True
    return scope == "write" and actor.readonly and not self_service


def _fill_value(value, values: dict):
    if isinstance(value, str):
        whole = re.fullmatch(r"\{(\w+)\}", value)
        return values[whole.group(1)] if whole else value.format(**values)
    if isinstance(value, list):
        return [_fill_value(item, values) for item in value]
    if isinstance(value, dict):
        return {key: _fill_value(item, values) for key, item in value.items()}
    return value


def _values_for(world: VictimWorld, actor: Actor) -> dict:
    user = actor.user
    return {
        **world.ids,
        "actor": user.pk if user else world.owner.pk,
        "actor_email": user.email if user else "",
        "actor_password": PASSWORD if user else "",
        "actor_refresh": actor.refresh,
    }


def _body(response) -> str:
    if not response.streaming:
        return response.content.decode(errors="replace")

    async def drain() -> bytes:
        return b"".join([part async for part in response.streaming_content])

    if hasattr(response.streaming_content, "__aiter__"):
        return asyncio.run(drain()).decode(errors="replace")
    return b"".join(response.streaming_content).decode(errors="replace")


def _probe(actor: Actor, path: str, call: Call, values: dict, *, form: bool) -> tuple[int, str, str]:
    """(status, body, Location) of one call; whatever it wrote is rolled back. A dashboard form refused with an
    error message and a redirect (the pages' post/redirect/get) reports Location "refused"."""
    url = path + ("?" + call.query.format(**values) if call.query else "")
    body = _fill_value(call.body or {}, values)
    with transaction.atomic():
        if call.method == "GET":
            response = actor.client.get(url)
        elif form:
            response = actor.client.post(url, data=body)
        else:
            send = getattr(actor.client, call.method.lower())
            response = send(url, data=json.dumps(body), content_type="application/json")
        text = _body(response)
        location = response.get("Location", "")
        if form and response.status_code == 302 and response.wsgi_request is not None:
            if any(m.level == message_levels.ERROR for m in get_messages(response.wsgi_request)):
                location = "refused"
        transaction.set_rollback(True)
    return response.status_code, text, location


def _verdict(actor, status, text, location, refuse, call, *, dashboard: bool) -> str | None:
    leaked = actor.forbidden.search(text)
    allowed = set(REFUSED)
    if call.expect == OWN or (call.body and call.refs() - {"actor", "actor_email", "actor_password", "actor_refresh"}):
        allowed.add(400)  # invalid or foreign credentials / an object id in the body the caller cannot use
    if (dashboard or call.page) and status == 302 and (location == "refused" or "/accounts/login/" in location):
        allowed.add(302)
    problems = []
    if refuse and status not in allowed:
        problems.append(f"status {status}")
    if not refuse and status >= 500 and not (call.probe and status == 503):
        problems.append(f"status {status}")
    if leaked:
        start = max(0, leaked.start() - 60)
        problems.append(f"LEAKED {leaked.group(0)!r}: ...{text[start : leaked.end() + 60]!r}...")
    return ", ".join(problems) or None


def _sweep(world: VictimWorld, table: dict[str, Route], actors: list[Actor], *, dashboard: bool) -> list[str]:
    failures = []
    probed = 0
    views = {found.route: found.view for found in discover("config.urls")}
    for route_path, route in table.items():
        reset_counters()  # a 429 from the rate limiter would hide what the access layer answers
        path = fill(route_path, {k: str(world.ids.get(v, v.removeprefix("dummy:"))) for k, v in route.kinds.items()})
        view = views[route_path]
        for call in route.calls:
            scope = call.scope if dashboard else required_scope_for(view, call.method)
            candidates = list(actors)
            if not dashboard and scope in world.keys_lacking and call.expect not in (PUBLIC, OWN):
                candidates.append(world.keys_lacking[scope])
            for actor in candidates:
                refuse = _must_refuse(actor, route, call, scope, getattr(view, "self_service", False))
                if refuse is None:
                    continue
                values = _values_for(world, actor)
                status, text, location = _probe(actor, path, call, values, form=dashboard)
                probed += 1
                problem = _verdict(actor, status, text, location, refuse, call, dashboard=dashboard)
                if problem:
                    query = f"?{call.query.format(**values)}" if call.query else ""
                    failures.append(f"{call.method} {path}{query} [{actor.name}]: {problem}")
    calls = sum(len(route.calls) for route in table.values())
    assert probed > calls * 3, f"only {probed} probes for {calls} calls: the actors were not used"
    return failures


def test_api_routes_refuse_strangers_and_members_without_access(world):
    failures = _sweep(world, API_ROUTES, world.api_actors, dashboard=False)
    assert not failures, f"{len(failures)} API isolation failures:\n" + "\n".join(failures)


def test_dashboard_routes_refuse_strangers_and_members_without_access(world):
    failures = _sweep(world, DASHBOARD_ROUTES, world.dashboard_actors, dashboard=True)
    assert not failures, f"{len(failures)} dashboard isolation failures:\n" + "\n".join(failures)


# --- WebSockets -------------------------------------------------------------------------------------------------


VICTIM_ID_KEYS = {"agent_id": "agent", "kb_id": "kb", "knowledge_base_id": "kb", "run_id": "run"}


def _mentions_victim(event, victim: dict, agent_only: bool) -> str | None:
    """The key of a field naming a victim object (by id), anywhere in an event."""
    if isinstance(event, dict):
        for key, value in event.items():
            kind = VICTIM_ID_KEYS.get(key)
            if kind and (not agent_only or kind in ("agent", "run")) and str(value) in victim[kind]:
                return f"{key}={value}"
            found = _mentions_victim(value, victim, agent_only)
            if found:
                return found
    elif isinstance(event, list):
        for item in event:
            found = _mentions_victim(item, victim, agent_only)
            if found:
                return found
    return None


async def _open(world: VictimWorld, actor: Actor, path: str):
    host = host_of(world.tenant).encode()
    headers = [(b"host", host), (b"origin", b"http://" + host)]
    given = {name for name, _ in actor.ws_headers}
    headers = [h for h in headers if h[0] not in given] + actor.ws_headers
    query = actor.ws_query
    if query:
        path += ("&" if "?" in path else "?") + query
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await communicator.connect(timeout=5)
    return communicator, connected, code


async def _drain(communicator, seconds: float = 0.3) -> list[str]:
    """What the socket sent until it stays quiet for `seconds` (receive_output's timeout would kill the app)."""
    received = []
    while not await communicator.receive_nothing(timeout=seconds):
        message = await communicator.receive_output()
        if message.get("type") == "websocket.close":
            break
        received.append(message.get("text") or "")
    return received


def _victim_acts(world: VictimWorld) -> None:
    """The victim works while the sockets listen: a new private agent, and a chat run on the private agent."""
    with tenant_context(world.tenant):
        as_owner = principal_for_user(world.owner, world.tenant)
        agent_create(principal=as_owner, data={"name": f"{MARKER}-agent-live"})
        agent = Agent.objects.get(pk=world.ids["agent"])
        handles = chat_start(principal=as_owner, agent=agent, message=f"{MARKER}-message live")
    run_inline(world.tenant, handles["run_id"])
    connection.set_schema_to_public()


def test_websocket_routes_refuse_strangers_and_carry_nothing_private(world):
    failures: list[str] = []
    victim = {"agent": {str(world.ids["agent"])}, "kb": {str(world.ids["kb"])}, "run": {str(world.ids["run"])}}
    chat_actors = [*world.ws_actors, world.keys_lacking["chat"]]
    events_actors = [*world.ws_actors, world.keys_lacking["read"]]
    events_paths = [
        "/ws/events/",
        "/ws/events/?since=0-0",
        f"/ws/events/?topics=agent.{world.ids['agent']},kb.{world.ids['kb']},run.{world.ids['run']}",
    ]

    def check(actor: Actor, label: str, texts: list[str]) -> None:
        for text in texts:
            leaked = actor.forbidden.search(text)
            try:
                mention = _mentions_victim(json.loads(text), victim, actor.agent_limited)
            except ValueError:
                mention = None
            if actor.stranger:
                mention = mention or (text if text else None)
            if leaked or mention:
                failures.append(f"{label} [{actor.name}]: received {text[:300]!r}")

    async def scenario() -> None:
        for actor in world.ws_actors:  # ping is public: it may answer, but only about the host's organisation
            communicator, connected, _ = await _open(world, actor, "/ws/ping/")
            if connected:
                texts = await _drain(communicator)
                await communicator.disconnect()
                if any(actor.forbidden.search(text) for text in texts):
                    failures.append(f"/ws/ping/ [{actor.name}]: received {texts!r}")
        chat_path = f"/ws/agents/{world.ids['agent']}/chat/"
        for actor in chat_actors:
            communicator, connected, code = await _open(world, actor, chat_path)
            if connected:
                await communicator.send_json_to({"type": "resume", "run_id": world.ids["run"], "after": 0})
                texts = await _drain(communicator, 1.0)
                await communicator.disconnect()
                failures.append(f"{chat_path} [{actor.name}]: handshake accepted; then received {texts[:3]!r}")
        listening = []
        for path in events_paths:
            for actor in events_actors:
                communicator, connected, code = await _open(world, actor, path)
                refuse = actor.stranger or actor.lacks is not None
                if connected and refuse:
                    failures.append(f"{path} [{actor.name}]: handshake accepted (closed with {code} expected)")
                if connected:
                    await communicator.send_json_to({"type": "subscribe", "topic": f"agent.{world.ids['agent']}"})
                    listening.append((communicator, actor, path))
        for communicator, actor, path in listening:  # replays and subscription answers
            check(actor, path, await _drain(communicator))
        await asyncio.to_thread(_victim_acts, world)
        for communicator, actor, path in listening:
            check(actor, f"{path} (live)", await _drain(communicator, 0.5))
            await communicator.disconnect()

    asyncio.run(scenario())
    assert not failures, f"{len(failures)} WebSocket isolation failures:\n" + "\n".join(failures)
