"""Row-level security (core.rls): PostgreSQL hides other members' private rows even from queries that skip iam.policy.

Every test here bypasses the access layer on purpose (bare querysets, raw SQL, a list API whose selector "forgot"
its filter) and checks that the database itself returns exactly what iam.policy would have allowed, no more.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.db import connection, connections, transaction
from django.utils import timezone
from django_tenants.utils import tenant_context

from accounts.models import Role, User
from accounts.tests.helpers import api_key_create, jwt_client, member_create
from agents import selectors as agent_selectors
from agents.models import Agent, Conversation, Message
from agents.tests.conftest import free_port, stop_process
from config.processes import WEB, command
from conftest import ROOT, host_of, subprocess_env
from core.rls import (
    DEFAULT_APP_ROLE,
    NOBODY,
    PRINCIPAL_SETTING,
    current_db_principal,
    db_principal_for,
    db_principal_scope,
)
from iam.models import ApiKey, Share, Team, TeamMembership
from iam.policy import principal_for_user, resource_queryset_for
from knowledge.models import Chunk, Document, KnowledgeBase
from tenants.models import Tenant
from tenants.services import tenant_create


@pytest.fixture(autouse=True)
def _row_level_security_on(settings, django_db_blocker):
    """Enforced here whatever the deployment's DB_APP_ROLE says: the migrations create the role either way."""
    if not settings.DB_APP_ROLE:
        settings.DB_APP_ROLE = DEFAULT_APP_ROLE
    yield
    connection.rls_applied = None  # the next test's state is applied afresh
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute("RESET ROLE")


@dataclass
class World:
    owner: User  # a member with private things of its own
    member: User  # another member, in a team the owner shared one agent with
    outsider: User  # a member nobody shared anything with
    admin: User
    private_agent: Agent
    team_agent: Agent  # private, shared with the member's team
    org_agent: Agent  # usable by the whole organisation, uses the owner's private knowledge base
    private_kb: KnowledgeBase  # the owner's, used by org_agent
    secret_kb: KnowledgeBase  # the owner's, used by nothing
    secret_document: Document
    secret_chunk: Chunk
    owner_conversation: Conversation
    member_conversation: Conversation
    owner_key: ApiKey
    member_key: ApiKey


def _message(conversation: Conversation, text: str) -> Message:
    return Message.objects.create(conversation=conversation, created=timezone.now(), role="user", content=text)


@pytest.fixture
def world(tenant_a, admin_a) -> World:
    uid = uuid.uuid4().hex[:8]
    owner = member_create(tenant_a, email=f"rls-owner-{uid}@acme.test")
    member = member_create(tenant_a, email=f"rls-member-{uid}@acme.test")
    outsider = member_create(tenant_a, role=Role.READONLY, email=f"rls-outsider-{uid}@acme.test")
    with tenant_context(tenant_a):  # set-up runs unrestricted, as tests and tasks do
        private_kb = KnowledgeBase.objects.create(owner=owner, name="rls private kb")
        secret_kb = KnowledgeBase.objects.create(owner=owner, name="rls secret kb")
        secret_document = Document.objects.create(knowledge_base=secret_kb, title="rls secret", source_type="text")
        secret_chunk = Chunk.objects.create(
            knowledge_base=secret_kb,
            document=secret_document,
            position=0,
            text="rls secret",
            content_hash="x",
            valid_from=1,
        )
        Document.objects.create(knowledge_base=private_kb, title="rls used", source_type="text")
        private_agent = Agent.objects.create(owner=owner, name="rls private agent")
        team_agent = Agent.objects.create(owner=owner, name="rls team agent")
        org_agent = Agent.objects.create(owner=owner, name="rls org agent", org_access="viewer")
        org_agent.knowledge_bases.add(private_kb)
        team = Team.objects.create(name=f"rls-team-{uid}")
        TeamMembership.objects.create(team=team, user=member)
        Share.objects.create(team=team, resource_type="agent", resource_id=team_agent.pk, created_by=owner)
        owner_conversation = Conversation.objects.create(agent=org_agent, user=owner)
        member_conversation = Conversation.objects.create(agent=org_agent, user=member)
        _message(owner_conversation, "owner's words")
        _message(member_conversation, "member's words")
    owner_key, _ = api_key_create(tenant_a, owner, scopes=["read"])
    member_key, _ = api_key_create(tenant_a, member, scopes=["read"])
    return World(
        owner=owner,
        member=member,
        outsider=outsider,
        admin=admin_a,
        private_agent=private_agent,
        team_agent=team_agent,
        org_agent=org_agent,
        private_kb=private_kb,
        secret_kb=secret_kb,
        secret_document=secret_document,
        secret_chunk=secret_chunk,
        owner_conversation=owner_conversation,
        member_conversation=member_conversation,
        owner_key=owner_key,
        member_key=member_key,
    )


def _as(tenant: Tenant, user: User) -> Any:
    principal = principal_for_user(user, tenant)
    assert principal is not None
    return db_principal_scope(db_principal_for(user_id=user.pk, is_admin=principal.is_admin, schema=tenant.schema_name))


def _ids(queryset: Any) -> set[Any]:
    return set(queryset.values_list("pk", flat=True))


def _raw_ids(table: str) -> set[Any]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id FROM {table}")  # noqa: S608 - the test's own table names
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.django_db
def test_a_bare_queryset_shows_a_member_exactly_what_the_policy_allows(tenant_a, world):
    with tenant_context(tenant_a):
        for user in (world.owner, world.member, world.outsider, world.admin):
            principal = principal_for_user(user, tenant_a)
            allowed_agents = _ids(resource_queryset_for(principal, Agent.objects.all()))
            allowed_kbs = _ids(resource_queryset_for(principal, KnowledgeBase.objects.all()))
            with _as(tenant_a, user):
                assert _ids(Agent.objects.all()) == allowed_agents, user.email
                assert _raw_ids("agents_agent") == allowed_agents, user.email
                # Knowledge bases: the policy's, plus the names of those a visible agent uses (referenced_queryset_for).
                assert _ids(KnowledgeBase.objects.all()) - allowed_kbs <= {world.private_kb.pk}, user.email
                assert allowed_kbs <= _ids(KnowledgeBase.objects.all()), user.email

        with _as(tenant_a, world.member):
            assert world.private_agent.pk not in _ids(Agent.objects.all())
            assert {world.team_agent.pk, world.org_agent.pk} <= _ids(Agent.objects.all())
            assert world.secret_kb.pk not in _ids(KnowledgeBase.objects.all())
            assert not Document.objects.filter(pk=world.secret_document.pk).exists()
            assert not Chunk.objects.filter(pk=world.secret_chunk.pk).exists()
            assert world.secret_document.pk not in _raw_ids("knowledge_document")
            # The org-wide agent's knowledge base serves its chats: its contents stay visible to its users.
            assert Document.objects.filter(knowledge_base=world.private_kb).count() == 1


@pytest.mark.django_db
def test_conversations_messages_and_api_keys_are_their_members_own(tenant_a, world):
    with tenant_context(tenant_a):
        with _as(tenant_a, world.member):
            assert _ids(Conversation.objects.filter(agent=world.org_agent)) == {world.member_conversation.pk}
            assert set(Message.objects.values_list("content", flat=True)) >= {"member's words"}
            assert not Message.objects.filter(content="owner's words").exists()
            assert world.member_key.pk in _ids(ApiKey.objects.all())
            assert world.owner_key.pk not in _ids(ApiKey.objects.all())
            assert world.owner_key.pk not in _raw_ids("iam_apikey")
        with _as(tenant_a, world.admin):  # admins see every key and conversation of their organisation
            assert {world.owner_key.pk, world.member_key.pk} <= _ids(ApiKey.objects.all())
            assert {world.owner_conversation.pk, world.member_conversation.pk} <= _ids(Conversation.objects.all())


@pytest.mark.django_db
def test_a_forgotten_filter_changes_nothing_private_either(tenant_a, world):
    with tenant_context(tenant_a), _as(tenant_a, world.member):
        assert Agent.objects.filter(pk=world.private_agent.pk).update(name="defaced") == 0
        assert Conversation.objects.filter(pk=world.owner_conversation.pk).delete()[0] == 0
    with tenant_context(tenant_a):
        assert Agent.objects.get(pk=world.private_agent.pk).name == "rls private agent"
        assert Conversation.objects.filter(pk=world.owner_conversation.pk).exists()


@pytest.mark.django_db
def test_before_authentication_nothing_private_is_visible(tenant_a, world):
    with tenant_context(tenant_a), db_principal_scope(NOBODY):
        assert not Agent.objects.exists()  # not even what the whole organisation may use: nobody is no member
        assert not KnowledgeBase.objects.exists()
        assert not ApiKey.objects.exists()
        assert not Conversation.objects.exists()
        assert not Message.objects.exists()
    with tenant_context(tenant_a):  # unrestricted again once the scope ends
        assert world.private_agent.pk in _ids(Agent.objects.all())


@pytest.mark.django_db
def test_queries_run_as_the_restricted_role_not_the_migrating_one(tenant_a, world):
    with tenant_context(tenant_a):
        with _as(tenant_a, world.member), connection.cursor() as cursor:
            cursor.execute("SELECT current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)")
            assert cursor.fetchone() == (settings.DB_APP_ROLE, False)
            cursor.execute("SELECT 1 FROM pg_class WHERE relname = 'agents_agent' AND pg_has_role(relowner, 'USAGE')")
            assert cursor.fetchone() is None  # owns no table: owners bypass row-level security
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user")
            assert cursor.fetchone()[0] != settings.DB_APP_ROLE


@pytest.mark.django_db
def test_a_rolled_back_transaction_does_not_leave_the_connection_unrestricted(tenant_a, world):
    """A session setting made inside a transaction is undone by its rollback; the backend must notice."""
    with tenant_context(tenant_a), _as(tenant_a, world.member):
        with pytest.raises(RuntimeError), transaction.atomic():
            assert world.private_agent.pk not in _ids(Agent.objects.all())
            raise RuntimeError("roll back")
        assert world.private_agent.pk not in _ids(Agent.objects.all())
        assert world.private_agent.pk not in _raw_ids("agents_agent")


@pytest.mark.django_db
def test_a_reused_connection_never_keeps_the_previous_principal(tenant_a, world):
    """What a pooled connection does between requests: closed (returned) by one, opened (checked out) by the next."""
    with tenant_context(tenant_a):
        with _as(tenant_a, world.owner):
            assert world.private_agent.pk in _ids(Agent.objects.all())
        connection.rls_applied = None  # as after a checkout: the session's state is unknown
        with _as(tenant_a, world.member):
            assert world.private_agent.pk not in _ids(Agent.objects.all())
        with db_principal_scope(NOBODY):
            assert not Agent.objects.exists()


@pytest.mark.django_db
def test_a_list_api_whose_selector_forgot_the_filter_still_shows_only_what_the_caller_may_see(
    tenant_a, world, monkeypatch
):
    """The request path end to end: middleware, JWT, the policy naming the principal, a bare queryset."""
    monkeypatch.setattr(agent_selectors, "agent_list", lambda *, principal: Agent.objects.order_by("name"))
    listed = {a["id"] for a in jwt_client(tenant_a, world.member).get("/api/v1/agents/").json()["results"]}
    assert world.private_agent.pk not in listed
    assert {world.team_agent.pk, world.org_agent.pk} <= listed
    assert current_db_principal.get() is None  # the request's restriction ended with it


@pytest.mark.django_db
def test_a_new_organisation_gets_the_policies_of_the_template():
    owner = User.objects.create_user(email=f"rls-{uuid.uuid4().hex[:8]}@new.test", password="x-Pass-12345")
    tenant = tenant_create(name="RLS clone", slug=f"rls{uuid.uuid4().hex[:6]}", owner=owner)  # rolled back after
    with connection.cursor() as cursor:
        query = (
            "SELECT c.relname, p.polname, pg_get_expr(p.polqual, p.polrelid, true) FROM pg_policy p"
            " JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s ORDER BY 1, 2"
        )
        cursor.execute(query, [settings.TENANT_BASE_SCHEMA])
        template = [row[:2] for row in cursor.fetchall()]
        cursor.execute(query, [tenant.schema_name])
        cloned = cursor.fetchall()
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relrowsecurity ORDER BY 1",
            [tenant.schema_name],
        )
        protected = [row[0] for row in cursor.fetchall()]
    assert template and [row[:2] for row in cloned] == template
    assert not [row for row in cloned if row[2] and settings.TENANT_BASE_SCHEMA in row[2]]  # its own tables
    assert "agents_message" in protected and "agents_agent" in protected  # the partitioned table as well
    with tenant_context(tenant):
        Agent.objects.create(owner=owner, name="in the clone")
        stranger = member_create(tenant, email=f"rls-stranger-{uuid.uuid4().hex[:8]}@new.test")
        with _as(tenant, stranger):
            assert not Agent.objects.exists()


@pytest.mark.django_db
def test_an_admin_sees_everything_in_its_own_organisation_only(tenant_a, tenant_b, admin_a, admin_b, world):
    with tenant_context(tenant_b):
        theirs = Agent.objects.create(owner=admin_b, name="rls other organisation")
        with _as(tenant_a, admin_a):  # code that visits another schema while an admin of the first one acts
            assert theirs.pk not in _ids(Agent.objects.all())
    with tenant_context(tenant_a), _as(tenant_a, admin_a):
        assert world.private_agent.pk in _ids(Agent.objects.all())


# --- Pooled connections -----------------------------------------------------------------------------------------
# Web processes share connections through psycopg's pool, which hands a connection back out with its session state
# (role, settings) as the previous request left it. These tests use committed rows (the pool's connections are not
# the test's) and a pool of one connection, so the second request is bound to get the first one's connection.


@dataclass
class TwoMembers:
    tenant: Tenant
    first: User
    second: User
    first_agent: Agent  # private to `first`
    second_agent: Agent  # private to `second`
    first_key: str
    second_key: str


@pytest.fixture
def two_members(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        connection.set_schema_to_public()
        tenant = Tenant.objects.get(slug="acme")
        uid = uuid.uuid4().hex[:8]
        first = member_create(tenant, email=f"rls-pool-first-{uid}@acme.test")
        second = member_create(tenant, email=f"rls-pool-second-{uid}@acme.test")
        try:
            with tenant_context(tenant):
                first_agent = Agent.objects.create(owner=first, name=f"rls pool first {uid}")
                second_agent = Agent.objects.create(owner=second, name=f"rls pool second {uid}")
            _, first_key = api_key_create(tenant, first, scopes=["read"])
            _, second_key = api_key_create(tenant, second, scopes=["read"])
            yield TwoMembers(tenant, first, second, first_agent, second_agent, first_key, second_key)
        finally:
            connection.rls_applied = None
            with tenant_context(tenant):  # the tenant's tables and the users' (public) are both on the path here
                ApiKey.objects.filter(created_by__in=[first, second]).delete()
                Agent.objects.filter(owner__in=[first, second]).delete()
                User.objects.filter(pk__in=[first.pk, second.pk]).delete()
            connection.set_schema_to_public()


def _checked_out_pid_and_agents(pooled: Any, tenant: Tenant, principal: str) -> tuple[int, set[int]]:
    """One "request": check a connection out of the pool, query as `principal`, give the connection back."""
    with db_principal_scope(principal):
        pooled.set_tenant(tenant)
        try:
            with pooled.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                pid = cursor.fetchone()[0]
                cursor.execute("SELECT id FROM agents_agent")
                return pid, {row[0] for row in cursor.fetchall()}
        finally:
            pooled.close()  # back to the pool, session state and all


def test_a_pooled_connection_does_not_carry_one_members_principal_into_the_next_request(two_members, django_db_blocker):
    world = two_members
    settings_dict = {
        **connection.settings_dict,
        "CONN_MAX_AGE": 0,
        "OPTIONS": {**connection.settings_dict.get("OPTIONS", {}), "pool": {"min_size": 1, "max_size": 1}},
    }
    alias = f"rls_pool_{uuid.uuid4().hex[:6]}"
    connections.settings[alias] = settings_dict  # a registered alias: tenant switching looks connections up by it
    pooled = connections[alias]
    first = db_principal_for(user_id=world.first.pk, is_admin=False, schema=world.tenant.schema_name)
    second = db_principal_for(user_id=world.second.pk, is_admin=False, schema=world.tenant.schema_name)
    with django_db_blocker.unblock():
        try:
            first_pid, first_sees = _checked_out_pid_and_agents(pooled, world.tenant, first)
            # The pool itself resets nothing: the returned connection still acts as the first member...
            raw = pooled.pool.getconn()
            try:
                state = raw.execute(f"SELECT current_user, current_setting('{PRINCIPAL_SETTING}', true)").fetchone()
                assert state == (settings.DB_APP_ROLE, first)
            finally:
                pooled.pool.putconn(raw)
            # ... so it is the backend that must put the next request in its own state.
            second_pid, second_sees = _checked_out_pid_and_agents(pooled, world.tenant, second)
            nobody_pid, nobody_sees = _checked_out_pid_and_agents(pooled, world.tenant, NOBODY)
            assert first_pid == second_pid == nobody_pid  # one connection served all three
            assert world.first_agent.pk in first_sees and world.second_agent.pk not in first_sees
            assert world.second_agent.pk in second_sees and world.first_agent.pk not in second_sees
            assert not nobody_sees
        finally:
            pooled.close_pool()
            del connections[alias]
            del connections.settings[alias]


@pytest.mark.e2e
def test_daphne_with_a_one_connection_pool_serves_each_member_only_its_own_rows(two_members, django_db_blocker):
    """The same through a live web process (DB_POOL, one connection): a member whose request reused the other's
    connection with the other's principal would not see its own private agent."""
    world = two_members
    port = free_port()
    with django_db_blocker.unblock():
        env = subprocess_env()
    env.update(DB_POOL="true", DB_POOL_MIN_SIZE="1", DB_POOL_MAX_SIZE="1", DB_POOL_TIMEOUT="20")
    host = {"Host": host_of(world.tenant)}
    proc = subprocess.Popen(
        [sys.executable, "-m", *command(WEB, port=str(port))],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, "daphne exited early"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", headers=host, timeout=2).is_success:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "daphne did not answer /healthz"
            time.sleep(0.25)

        def listed(key: str) -> set[int]:
            response = httpx.get(
                f"http://127.0.0.1:{port}/api/v1/agents/?page_size=100",
                headers={**host, "Authorization": f"Api-Key {key}"},
                timeout=30,
            )
            assert response.status_code == 200, response.text
            return {agent["id"] for agent in response.json()["results"]}

        for _ in range(2):  # alternate, so each request follows the other member's on the one connection
            first_sees = listed(world.first_key)
            second_sees = listed(world.second_key)
            assert world.first_agent.pk in first_sees and world.second_agent.pk not in first_sees
            assert world.second_agent.pk in second_sees and world.first_agent.pk not in second_sees
    finally:
        stop_process(proc)
