"""Data lifecycle of conversations: month partitions dropped by retention without holding up writes, a member's
export carrying their conversations, and account deletion following the organisation's policy."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

import psycopg
import pytest
from django.db import ProgrammingError, connection, transaction
from django.test import Client

from accounts.models import Membership, Role, User
from accounts.services import user_delete
from agents.lifecycle import message_retention_apply
from agents.models import Conversation, Message
from agents.partitions import (
    message_partition_drop,
    message_partitions_ensure,
    message_partitions_expired,
    message_partitions_list,
    message_table_create,
    partition_name,
)
from agents.services import agent_create
from agents.tasks import message_retention_apply_all_task
from conftest import PASSWORD, host_of, test_database_url
from core.tenancy import in_tenant
from iam.policy import Principal
from tenants.models import DepartedMemberMessages, Tenant

NOW = dt.datetime.now(dt.UTC)
THIS_MONTH = NOW.date().replace(day=1)


def _months_ago(months: int) -> dt.date:
    index = THIS_MONTH.year * 12 + THIS_MONTH.month - 1 - months
    return dt.date(index // 12, index % 12 + 1, 1)


def _at(month: dt.date) -> dt.datetime:
    return dt.datetime.combine(month.replace(day=10), dt.time(12), tzinfo=dt.UTC)


def _table_exists(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [name])
        return cursor.fetchone()[0] is not None


def _say(conversation: Conversation, when: dt.datetime, text: str) -> Message:
    return Message.objects.create(created=when, conversation=conversation, role="user", content=text)


@pytest.mark.django_db
def test_retention_drops_old_month_partitions_and_the_conversations_they_emptied(tenant_a, tenant_b, admin_a):
    tenant_a.message_retention_days = 365
    tenant_a.save(update_fields=["message_retention_days"])
    with in_tenant(tenant_a):
        old_months = [_months_ago(24), _months_ago(14)]
        kept_month = _months_ago(11)  # ends inside the retention window: kept whole
        for month in [*old_months, kept_month]:
            message_partitions_ensure(months_ahead=0, today=month)
        agent = agent_create(principal=Principal(tenant=tenant_a, user=admin_a, role="admin"), data={"name": "r"})
        forgotten = Conversation.objects.create(agent=agent, user=admin_a, title="forgotten")
        ongoing = Conversation.objects.create(agent=agent, user=admin_a, title="ongoing")
        _say(forgotten, _at(old_months[0]), "two years ago")
        _say(forgotten, _at(old_months[1]), "fourteen months ago")
        _say(ongoing, _at(old_months[1]), "old turn")
        _say(ongoing, _at(kept_month), "eleven months ago")
        _say(ongoing, NOW, "today")
        Conversation.objects.filter(pk=forgotten.pk).update(updated_at=_at(old_months[1]))
        with connection.cursor() as cursor:
            # The beat task sees these rows committed; inside the test's transaction their deferred foreign-key
            # checks are still pending, and PostgreSQL drops no table with pending trigger events.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")

        results = message_retention_apply_all_task()

        assert sorted(results[tenant_a.schema_name]["dropped"]) == sorted(partition_name(m) for m in old_months)
        assert results[tenant_a.schema_name]["postponed"] == []
        assert results[tenant_b.schema_name]["cutoff"] is None  # no retention set there, none by default: kept forever
        partitions = message_partitions_list()
        for month in old_months:
            assert partition_name(month) not in partitions and not _table_exists(partition_name(month))
        assert partition_name(kept_month) in partitions and partition_name(THIS_MONTH) in partitions
        assert not Conversation.objects.filter(pk=forgotten.pk).exists()
        assert list(Message.objects.filter(conversation=ongoing).values_list("content", flat=True)) == [
            "eleven months ago",
            "today",
        ]


@pytest.mark.django_db
def test_retention_deletes_old_rows_that_landed_in_the_default_partition(tenant_a, admin_a, settings):
    settings.MESSAGE_RETENTION_DAYS = 400  # the operator's default applies: the organisation sets none
    with in_tenant(tenant_a):
        agent = agent_create(principal=Principal(tenant=tenant_a, user=admin_a, role="admin"), data={"name": "d"})
        conversation = Conversation.objects.create(agent=agent, user=admin_a)
        ancient = dt.datetime(2001, 3, 4, tzinfo=dt.UTC)  # no partition for 2001: the DEFAULT partition holds it
        _say(conversation, ancient, "ancient")
        _say(conversation, NOW, "now")
        result = message_retention_apply(tenant=Tenant.objects.get(pk=tenant_a.pk))
        assert result["default_rows_deleted"] == 1
        assert list(Message.objects.filter(conversation=conversation).values_list("content", flat=True)) == ["now"]


class Worker:
    """A thread with its own Django connection (autocommit, outside the test's transaction), in one schema: the
    retention job as a Celery worker runs it."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self._pool = ThreadPoolExecutor(max_workers=1)

    def __call__(self, fn, *args, **kwargs):
        return self.submit(fn, *args, **kwargs).result(timeout=30)

    def submit(self, fn, *args, **kwargs) -> Future:
        def in_schema():
            with in_tenant(self.schema):
                return fn(*args, **kwargs)

        return self._pool.submit(in_schema)

    def close(self) -> None:
        self._pool.submit(lambda: connection.close()).result()  # the worker thread's own connection
        self._pool.shutdown()


def _sql(statement: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement)


@pytest.fixture
def worker(db):
    """A schema outside the test transaction holding a real partitioned message table, so the retention job and
    concurrent writers run on separate, committed connections as in production."""
    schema = f"lifecycle_{uuid.uuid4().hex[:10]}"
    job = Worker(schema)
    try:
        job(_sql, f"CREATE SCHEMA {schema}")
        job(_sql, "CREATE TABLE agents_conversation (id uuid PRIMARY KEY)")
        job(message_table_create)
        yield job
    finally:
        job(_sql, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        job.close()


def _writer_connection(schema: str) -> psycopg.Connection:
    conn = psycopg.connect(test_database_url(), autocommit=True)
    conn.execute(f"SET search_path TO {schema}")
    return conn


_INSERT = (
    "INSERT INTO agents_message (created, conversation_id, role, content, citations, tool_calls, usage, kb_versions, "
    "status, error) VALUES (now(), %s, 'user', 'hi', '[]', '[]', '{}', '{}', 'complete', '{}')"
)


def _old_partitions_with_rows(job: Worker, months: list[dt.date]) -> uuid.UUID:
    conversation_id = uuid.uuid4()
    for month in months:
        job(message_partitions_ensure, months_ahead=0, today=month)
    with _writer_connection(job.schema) as conn:
        conn.execute("INSERT INTO agents_conversation (id) VALUES (%s)", [conversation_id])
        for month in months:
            conn.execute(_INSERT.replace("now()", "%s"), [_at(month), conversation_id])
    return conversation_id


def _month_tables(job: Worker) -> set[str]:
    with _writer_connection(job.schema) as conn:
        rows = conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace AND relname LIKE 'agents_message_p%%'",
            [job.schema],
        ).fetchall()
    return {row[0] for row in rows}


def test_dropping_old_partitions_never_holds_up_inserts_into_the_current_month(worker):
    old_months = [_months_ago(n) for n in range(13, 25)]
    conversation_id = _old_partitions_with_rows(worker, old_months)
    cutoff = NOW - dt.timedelta(days=365)
    assert len(worker(message_partitions_expired, cutoff=cutoff)) == len(old_months)

    # A chat turn is being written and its transaction is still open: the job must not queue behind it (which
    # would queue every later insert behind the job); it leaves the months for its next run.
    busy = _writer_connection(worker.schema)
    busy.execute("BEGIN")
    busy.execute(_INSERT, [conversation_id])
    started = time.monotonic()
    assert worker(message_partition_drop, partition_name(old_months[0]), lock_timeout_ms=50) is False
    assert time.monotonic() - started < 2
    busy.execute("COMMIT")
    busy.close()

    # Now drop them all while another connection keeps inserting into the current month.
    latencies: list[float] = []
    stop = threading.Event()

    def insert_continuously() -> None:
        with _writer_connection(worker.schema) as conn:
            while not stop.is_set():
                begun = time.monotonic()
                conn.execute(_INSERT, [conversation_id])
                latencies.append(time.monotonic() - begun)

    def drop_all() -> list[bool]:
        return [message_partition_drop(name, lock_timeout_ms=50) for name in message_partitions_expired(cutoff=cutoff)]

    writer = threading.Thread(target=insert_continuously)
    writer.start()
    try:
        time.sleep(0.1)
        dropped = worker(drop_all)
        time.sleep(0.1)
    finally:
        stop.set()
        writer.join(timeout=10)
    assert dropped and all(dropped)
    assert worker(message_partitions_expired, cutoff=cutoff) == []
    assert not {partition_name(month) for month in old_months} & _month_tables(worker)
    assert partition_name(THIS_MONTH) in worker(message_partitions_list)
    assert len(latencies) > 20 and max(latencies) < 0.5, max(latencies)
    with _writer_connection(worker.schema) as conn:
        count = conn.execute(f"SELECT count(*) FROM {partition_name(THIS_MONTH)}").fetchone()[0]  # noqa: S608
    assert count == len(latencies) + 1


def test_without_a_default_partition_old_months_are_detached_concurrently_past_an_open_write(worker):
    old_month = _months_ago(30)
    conversation_id = _old_partitions_with_rows(worker, [old_month])
    worker(_sql, "DROP TABLE agents_message_default")
    busy = _writer_connection(worker.schema)
    busy.execute("BEGIN")
    busy.execute(_INSERT, [conversation_id])  # an open write: DETACH CONCURRENTLY waits for it, nobody waits for us
    outcome = worker.submit(message_partition_drop, partition_name(old_month), lock_timeout_ms=50)
    time.sleep(0.5)
    assert not outcome.done()  # waiting for the open write, as CONCURRENTLY does
    with _writer_connection(worker.schema) as other:  # inserts still go through while the detach waits
        begun = time.monotonic()
        other.execute(_INSERT, [conversation_id])
        assert time.monotonic() - begun < 0.5
    busy.execute("COMMIT")
    busy.close()
    assert outcome.result(timeout=20) is True
    assert partition_name(old_month) not in worker(message_partitions_list)
    assert partition_name(old_month) not in _month_tables(worker)


# --- A member's export and account deletion --------------------------------------------------------------------


@pytest.fixture
def member_with_a_chat(tenant_a, admin_a):
    member = User.objects.create_user(email=f"leaver-{uuid.uuid4().hex[:6]}@acme.test", password=PASSWORD)
    Membership.objects.create(user=member, tenant=tenant_a, role=Role.USER)
    with in_tenant(tenant_a):
        agent = agent_create(principal=Principal(tenant=tenant_a, user=admin_a, role="admin"), data={"name": "x"})
        conversation = Conversation.objects.create(agent=agent, user=member, title="my secret plans")
        _say(conversation, NOW, "question from the member")
        Message.objects.create(created=NOW, conversation=conversation, role="assistant", content="an answer")
        theirs = Conversation.objects.create(agent=agent, user=admin_a, title="admin's")
        _say(theirs, NOW, "admin's question")
    return member, conversation


@pytest.mark.django_db
def test_a_members_export_includes_their_conversations_and_messages_only(tenant_a, member_with_a_chat):
    member, conversation = member_with_a_chat
    client = Client(HTTP_HOST=host_of(tenant_a))
    client.force_login(member)
    response = client.get("/api/v1/me/export/")
    assert response.status_code == 200, response.content
    exported = response.json()["organisation"]["conversations"]
    assert [c["id"] for c in exported] == [str(conversation.id)]
    assert exported[0]["title"] == "my secret plans"
    assert exported[0]["agent"]["name"] is None  # a private agent of the admin's: the member's chat, not its name
    assert [(m["role"], m["content"]) for m in exported[0]["messages"]] == [
        ("user", "question from the member"),
        ("assistant", "an answer"),
    ]


@pytest.mark.django_db
def test_account_deletion_deletes_the_members_conversations_by_default(tenant_a, member_with_a_chat):
    member, conversation = member_with_a_chat
    assert Tenant.objects.get(pk=tenant_a.pk).departed_member_messages == DepartedMemberMessages.DELETE
    user_delete(user=member)
    with in_tenant(tenant_a):
        assert not Conversation.objects.filter(pk=conversation.pk).exists()
        assert not Message.objects.filter(conversation_id=conversation.pk).exists()
        assert Message.objects.filter(content="admin's question").exists()  # others' chats stay


@pytest.mark.django_db
def test_account_deletion_keeps_conversations_unlinked_when_the_organisation_anonymises(tenant_a, member_with_a_chat):
    member, conversation = member_with_a_chat
    Tenant.objects.filter(pk=tenant_a.pk).update(departed_member_messages=DepartedMemberMessages.ANONYMISE)
    user_delete(user=member)
    with in_tenant(tenant_a):
        kept = Conversation.objects.get(pk=conversation.pk)
        assert kept.user_id is None and kept.title == ""
        assert Message.objects.filter(conversation=kept).count() == 2
        assert not Conversation.objects.filter(user_id=member.pk).exists()


# --- The organisation's data policy (its whole export: backups/tests/test_backups.py) ----------------------------


def _client(tenant, user) -> Client:
    client = Client(HTTP_HOST=host_of(tenant))
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_an_admin_sets_the_data_policy_and_a_member_cannot(tenant_a, admin_a, member_with_a_chat):
    member, _ = member_with_a_chat
    admin = _client(tenant_a, admin_a)
    response = admin.patch(
        "/api/v1/organisation/data-policy/",
        {"message_retention_days": 400, "departed_member_messages": "anonymise"},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["message_retention_days_effective"] == 400
    tenant = Tenant.objects.get(pk=tenant_a.pk)
    assert (tenant.message_retention_days, tenant.departed_member_messages) == (400, "anonymise")
    too_short = admin.patch(
        "/api/v1/organisation/data-policy/", {"message_retention_days": 7}, content_type="application/json"
    )
    assert too_short.status_code == 400
    assert Tenant.objects.get(pk=tenant_a.pk).message_retention_days == 400
    as_member = _client(tenant_a, member)
    assert as_member.get("/api/v1/organisation/data-policy/").status_code == 403
    refused = as_member.patch(
        "/api/v1/organisation/data-policy/", {"message_retention_days": None}, content_type="application/json"
    )
    assert refused.status_code == 403
    assert Tenant.objects.get(pk=tenant_a.pk).message_retention_days == 400


@pytest.mark.django_db
def test_the_dashboard_data_page_saves_the_policy_for_admins_only(tenant_a, admin_a, member_with_a_chat):
    member, _ = member_with_a_chat
    admin = _client(tenant_a, admin_a)
    page = admin.get("/manage/data/")
    assert page.status_code == 200 and b"Keep conversations for" in page.content
    saved = admin.post(
        "/manage/data/", {"intent": "save", "message_retention_days": "90", "departed_member_messages": "anonymise"}
    )
    assert saved.status_code == 302
    tenant = Tenant.objects.get(pk=tenant_a.pk)
    assert (tenant.message_retention_days, tenant.departed_member_messages) == (90, "anonymise")
    assert _client(tenant_a, member).get("/manage/data/").status_code in (302, 403)


@pytest.mark.django_db
def test_dropping_a_month_never_touches_a_table_of_that_name_elsewhere_on_the_search_path(tenant_a):
    name = partition_name(_months_ago(60))
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE public.{name} (id int)")
    with in_tenant(tenant_a):
        assert _table_exists(name)  # found through the search_path, though not the organisation's
        with pytest.raises(ProgrammingError, match="does not exist"), transaction.atomic():
            message_partition_drop(name, lock_timeout_ms=50)
    assert _table_exists(f"public.{name}")
